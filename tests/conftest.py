"""Session-wide test setup: one torch thread, no network, the bundled model loaded once.

Model-backed fixtures are session-scoped: converting the bundled GGUF, loading it with
transformers and starting vLLM each cost tens of seconds, so every test shares one of each.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before torch/vllm are imported anywhere: 2-core machines, busy-waiting OpenMP threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

import pytest


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a Hugging Face folder (converted once, then cached)."""
    from instructforge.engines.model import bundled_model_dir as convert

    return convert()


@pytest.fixture(scope="session")
def hf_engine(bundled_model_dir):
    """The real transformers engine on the bundled model, shared by the whole session."""
    import torch

    torch.set_num_threads(1)
    from instructforge.engines import create_engine
    from instructforge.engines.config import EngineConfig

    engine = create_engine(EngineConfig(backend="transformers", model=str(bundled_model_dir)))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_engine(bundled_model_dir):
    """The real vLLM offline engine (vllm-cpu here) on the bundled model, started once."""
    from instructforge.engines import create_engine
    from instructforge.engines.config import EngineConfig

    # eager: no torch.compile warm-up (minutes on a shared 2-core CPU); the tests check behaviour, not speed
    engine = create_engine(EngineConfig(backend="vllm", model=str(bundled_model_dir), max_model_len=2048,
                                        enforce_eager=True))
    yield engine
    engine.close()


def pytest_collection_modifyitems(config, items):
    """Tests on the local Ray cluster run last, together: its processes (raylet, GCS, idle workers)
    then share the 2 cores with no other test, and it starts once."""
    items.sort(key=lambda item: "ray_cluster" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, small object store) for every Ray test of the session. Test
    modules whose own functions run in Ray workers register themselves with
    `ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])` (workers do not import tests/)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
