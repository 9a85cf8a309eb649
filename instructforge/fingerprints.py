"""What a stage's fingerprint is made of besides its config section and its inputs.

- **code**: the source of every `instructforge` module the stage imports, found by reading import
  statements (lazy ones inside functions included) from the stage module outwards, so editing a
  module reruns exactly the stages that import it, and editing one nobody imports reruns nothing;
  plus the versions of the libraries those modules import;
- **files**: the content of every file the stage reads (sources, benchmarks, reference sets);
- **models**: a content digest of each model folder (the bundled model: of its GGUF file; a hub
  id: of its cached snapshot);
- **engine**: only the engine settings that change what the model writes, never speed or patience.

File digests are cached by (path, size, mtime, ctime, inode), so a multi-GB model folder is read
once, not on every run; any write to a file changes its ctime, so a cached digest is never stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from instructforge import __version__


def fingerprint(obj: Any) -> str:
    """A short, stable hash of any JSON-able value (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# ---------------------------------------------------------------------------------------- code
NAMESPACE = "instructforge"
# package name -> folder; None = where the import system finds it. Tests point it at a copy.
SOURCE_ROOTS: dict[str, Path] | None = None
_parsed: dict[Path, tuple[tuple[int, int], str, frozenset[str]]] = {}


def _package_dir(package: str) -> Path | None:
    """Folder of a package. Only the namespace and its first-level packages are looked up through
    the import system (which imports nothing but `instructforge` itself for them); deeper ones
    are plain folders below those."""
    if SOURCE_ROOTS is not None:
        return SOURCE_ROOTS.get(package)
    return _found_package_dir(package) if package.count(".") <= 1 else None


@functools.cache
def _found_package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(name: str) -> Path | None:
    """The source file of a module of the namespace, without importing it (None: not ours/absent)."""
    parts = name.split(".")
    if parts[0] != NAMESPACE:
        return None
    # the longest package prefix with a known folder, then plain folders below it
    for cut in range(len(parts), 0, -1):
        base = _package_dir(".".join(parts[:cut]))
        if base is None:
            continue
        path = base.joinpath(*parts[cut:])
        for candidate in (path / "__init__.py", path.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None
    return None


def _imports(path: Path, name: str) -> tuple[str, frozenset[str]]:
    """(sha256 of the source, module names it may import), cached by size and mtime."""
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns)
    hit = _parsed.get(path)
    if hit and hit[0] == key:
        return hit[1], hit[2]
    source = path.read_bytes()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    digest = hashlib.sha256(source).hexdigest()[:16]
    _parsed[path] = (key, digest, frozenset(found))
    return digest, frozenset(found)


# Modules a stage imports to compute its fingerprint (`input_fingerprint`), whose own imports
# (engines, to name a model; the hub client) never run when the stage makes its rows.
FINGERPRINT_ONLY = frozenset({"instructforge.fingerprints"})


def code_digests(*modules: str) -> dict[str, str]:
    """{module: source digest} for the modules and their import closure inside the namespace, the
    package version, and the version of every installed library that closure imports (a new
    transformers or datasketch can change outputs too). Importing `a.b.c` runs `a/__init__.py`
    and `a/b/__init__.py` too, so parent packages are part of the closure."""
    seen: dict[str, str] = {}
    libraries: set[str] = set()
    todo = list(modules)
    while todo:
        parts = todo.pop().split(".")
        for cut in range(1, len(parts) + 1):
            mod = ".".join(parts[:cut])
            path = None if mod in seen else module_file(mod)
            if path is None:
                continue
            seen[mod], imported = _imports(path, mod)
            if mod in FINGERPRINT_ONLY:  # what it imports computes fingerprints, not the stage's rows
                continue
            todo.extend(i for i in imported if i.split(".")[0] == NAMESPACE and i not in seen)
            libraries.update(i.split(".")[0] for i in imported)
    return {"version": __version__, **dict(sorted(seen.items())), **library_versions(libraries)}


# Libraries that only draw on the terminal: upgrading them changes no output.
PRESENTATION = frozenset({"rich", "typer", "click", "tqdm"})


def library_versions(import_names: Iterable[str]) -> dict[str, str]:
    """{"lib:<distribution>": version} for the installed distributions behind these import names."""
    dists = _distributions()
    out = {}
    for name in import_names:
        for dist in dists.get(name, ()):
            if dist.lower() not in PRESENTATION and dist.lower() != NAMESPACE:
                out[f"lib:{dist}"] = _version(dist)
    return dict(sorted(out.items()))


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def _version(dist: str) -> str:
    return importlib.metadata.version(dist)


# --------------------------------------------------------------------------------------- files
class DigestCache:
    """sha256 of files, remembered on disk by (path, size, mtime, ctime, inode)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries: dict[str, list[Any]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def digest(self, file: Path) -> str:
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = str(file.resolve())
        hit = self.entries.get(key)
        if hit and hit[:4] == stamp:
            return hit[4]
        with file.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()[:24]
        self.entries[key] = [*stamp, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        live = {k: v for k, v in self.entries.items() if os.path.exists(k)}  # deleted files leave
        tmp.write_text(json.dumps(live), encoding="utf-8")
        os.replace(tmp, self.path)  # concurrent runs: last writer wins, every entry stays true
        self.dirty = False


def _cache(cache_dir: Path | None) -> DigestCache:
    from instructforge.engines.model import cache_root

    return DigestCache(cache_root(cache_dir) / "file-digests.json")


def files_digest(paths: Iterable[Path], cache_dir: Path | None = None) -> dict[str, str]:
    """{file: content digest} for files and every file under folders; a missing path is 'missing'."""
    cache = _cache(cache_dir)
    out: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                out[str(f)] = cache.digest(f)
        else:
            out[str(path)] = cache.digest(path) if path.is_file() else "missing"
    cache.save()
    return out


def model_digest(model: str | None, resolve: Any = Path, cache_dir: Path | None = None) -> str:
    """Identity of a model by content: the bundled one by its GGUF file, a local folder (or the
    cached snapshot of a hub id) by every file in it, hidden ones aside; anything else (a served
    model name) by its name."""
    from instructforge.engines.model import BUNDLED_NAME, READY, bundled_gguf

    if model in (None, "", "bundled"):
        return "bundled:" + files_digest([bundled_gguf()], cache_dir)[str(bundled_gguf())]
    path = next((p for p in (resolve(model), Path(model).expanduser()) if p.exists()), None) or _hub_snapshot(model)
    if path is None:
        return f"name:{model}"
    if path.is_dir() and path.name == BUNDLED_NAME and (path / READY).exists():
        return model_digest(None, resolve, cache_dir)  # the converted bundled model
    files = [p for p in sorted(path.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(path).parts)] if path.is_dir() else [path]
    digests = files_digest(files, cache_dir)
    rel = {(str(Path(f).relative_to(path)) if path.is_dir() else path.name): d for f, d in digests.items()}
    return f"content:{fingerprint(rel)}"


def _hub_snapshot(repo_id: str) -> Path | None:
    """The locally cached snapshot a hub model id loads from (runs are offline), if there is one."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not a hub id, or not cached: identified by its name
        return None


# -------------------------------------------------------------------------------------- engine
def engine_fingerprint(engine: Any, resolve: Any = Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """The engine settings that change outputs, with the model named by its content digest."""
    settings = engine.output_settings()  # fields marked SPEED_ONLY (timeouts, threads...) left out
    settings["model"] = model_digest(engine.model, resolve, cache_dir)
    return settings
