"""One YAML file -> one `PipelineConfig`. Each stage's section model lives beside the stage.

Unknown keys and bad values are errors naming the file, the line and the key path. An empty file and
a key written twice in one mapping are errors too (both would otherwise silently run something else
than what the file seems to say). A section that is absent (or `null`) means that stage is not
configured and `run` skips it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from instructforge.engines.config import EngineConfig
from instructforge.errors import ConfigError, InputError
from instructforge.executors.config import RayConfig
from instructforge.export.config import ExportConfig
from instructforge.filters.config import FiltersConfig
from instructforge.ingest.config import IngestConfig
from instructforge.ingest.readers import LineDict, parse_yaml
from instructforge.runs import RunContext
from instructforge.section import Section
from instructforge.selfinstruct.config import SelfInstructConfig
from instructforge.train.config import TrainConfig


class RunConfig(Section):
    name: str = Field("default", pattern=r"^[A-Za-z0-9._-]+$")
    root: Path = Path("runs")  # relative to the working directory; data paths are relative to the config file
    seed: int = 0
    # strict: bad input rows stop the run with file:line:field; record: they go to rejected/.
    on_error: Literal["strict", "record"] = "strict"
    # where the request cache and converted models live; none = ~/.cache/instructforge
    cache_dir: Path | None = None
    # skip rows earlier runs of this run directory saw; grow every stage by a new version (incremental.py)
    incremental: bool = False
    executor: Literal["local", "ray"] = "local"  # where stages that support it run (instructforge/executors)

    @property
    def path(self) -> Path:
        return self.root / self.name


class PipelineConfig(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    selfinstruct: SelfInstructConfig | None = None
    filters: FiltersConfig | None = None
    export: ExportConfig | None = None
    train: TrainConfig | None = None
    ray: RayConfig = Field(default_factory=RayConfig)  # used when run.executor is ray
    # where relative paths in the config are resolved from (the config file's folder)
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, path: str | Path) -> Path:
        return self.context().resolve(path)

    def context(self) -> RunContext:
        """What stages see of the whole config besides their own section."""
        return RunContext(name=self.run.name, seed=self.run.seed, on_error=self.run.on_error,
                          base_dir=self.base_dir, cache_dir=self.run.cache_dir, engine_model=self.engine.model,
                          incremental=self.run.incremental, executor=self.run.executor, ray=self.ray)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = parse_yaml(text, str(path))
    except InputError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        raise ConfigError(f"{path}: empty config file (write `{{}}` to run every default on purpose)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, source=str(path), base_dir=path.parent)


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path = Path(".")) -> PipelineConfig:
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, data)) from None
    cfg.base_dir = base_dir
    return cfg


def format_validation_error(e: ValidationError, source: str, data: Any = None) -> str:
    """One line per problem: `file:line: key.path: message` (the line of the deepest key found)."""
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        line = _line_of(data, err["loc"])
        lines.append(f"{source}{f':{line}' if line else ''}: {key}: {msg}")
    return "\n".join(lines)


def _line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """Line of the deepest key of the path that is in the YAML (None for data not read from YAML)."""
    line, node = None, data
    for key in loc:
        if isinstance(node, LineDict):
            line = node.key_lines.get(key, node.line)
        if isinstance(node, dict):
            node = node.get(key)
        else:
            node = node[key] if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node) else None
    return line


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{key}' is not a section")
    node[last] = value
