"""Loaded first by the suite's pytest processes (`-p coursekit.pytest_startup` in pyproject.toml's addopts).

pytest imports `-p` modules before its entry-point plugins, so this runs before nbval imports
nbformat, which imports jsonschema, which compiles rfc3987_syntax's IRI grammar on import: about
1.4 s of CPU in every pytest process (the controller and each xdist worker), for the "iri" formats
of JSON Schema that no schema of the course uses. Without the module jsonschema skips those two
formats (it imports it under `suppress(ImportError)`), as `course` already does (coursekit.cli.main).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from pathlib import Path

sys.modules.setdefault("rfc3987_syntax", None)

# pytest marks for assertion rewriting every top-level package of every installed distribution that
# registers a pytest plugin, whether that plugin is loaded or blocked (`-p no:NAME`). schemathesis and
# hypothesis are blocked in the suite (their plugins are unused), yet the first `import schemathesis`
# in a worker (tests/test_openapi_contracts.py) re-parsed and re-compiled their ~380 modules: about
# 3.5 s of CPU per process where bytecode is not written (PYTHONDONTWRITEBYTECODE, a read-only venv),
# since pytest caches a rewritten module only beside it.
BLOCKED_PLUGIN_PACKAGES = {
    "schemathesis": ("schemathesis",),
    "hypothesispytest": ("hypothesis", "_hypothesis_pytestplugin", "_hypothesis_globals", "_hypothesis_ftz_detector"),
}


def pytest_configure(config) -> None:
    hook = getattr(config.pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)  # pytest's own set; a later pytest without it: nothing changes
    if not isinstance(marked, set):
        return
    for plugin, packages in BLOCKED_PLUGIN_PACKAGES.items():
        if config.pluginmanager.is_blocked(plugin):
            marked.difference_update(packages)
    getattr(hook, "_marked_for_rewrite_cache", {}).clear()


# Every xdist worker imports every test module to collect it, and pytest rewrites each one's asserts
# first (parse, rewrite, compile): about 1.4 s of CPU per worker for the suite's ~50 modules, six times
# over while the workers start together on two cores. pytest keeps a rewritten module in a checked-hash
# pyc beside it and reads one whenever it is there, but writes one only where bytecode is written:
# under PYTHONDONTWRITEBYTECODE (set on the machines the suite runs on) every worker rewrote everything.
# So the xdist controller, which collects nothing itself, writes those pycs once before it starts the
# workers, and the plain pycs of the project's own modules, which every worker, kernel and `course`
# process imports. Each is checked against its source's hash when read: an edited file is rewritten
# as before. Only files of the project's own folders, in __pycache__ (git ignores them).
PROJECT_PACKAGES = ("coursekit", "capstone")


def pytest_sessionstart(session) -> None:
    config = session.config
    if config.pluginmanager.get_plugin("dsession") is None:  # not an xdist controller: nothing to share
        return
    try:
        precompile(config)
    except Exception as exc:  # a pytest without these internals: the workers compile as before, and say so
        import warnings

        warnings.warn(f"coursekit.pytest_startup: the workers compile the test modules each ({type(exc).__name__}: {exc})")


def modules_to_rewrite(config) -> list[Path]:
    """The files the workers will rewrite when they collect: conftests and test files under the run's paths."""
    patterns = [*config.getini("python_files"), "conftest.py"]
    skipped = config.getini("norecursedirs")
    root = Path(config.rootpath)
    found = {root / "conftest.py"} if (root / "conftest.py").is_file() else set()
    for arg in config.args:
        start = Path(arg.split("::", 1)[0])
        start = start if start.is_absolute() else Path(config.invocation_params.dir) / start
        if start.is_file():  # named on the command line: pytest rewrites it whatever its name, if it is Python
            if start.suffix == ".py":
                found.add(start)
            continue
        for folder, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in skipped)]
            found.update(Path(folder) / f for f in files
                         if f.endswith(".py") and any(fnmatch.fnmatch(f, p) for p in patterns))
    return sorted(found)


def precompile(config) -> tuple[int, int]:
    """Write the pytest pycs of the run's test modules and the plain pycs of the project's packages
    that are missing or out of date; returns how many of each were written."""
    import importlib.util
    import py_compile

    from _pytest.assertion import rewrite

    state = config.stash[rewrite.assertstate_key]
    rewritten = 0
    for module in modules_to_rewrite(config):
        pyc = rewrite.get_cache_dir(module) / (module.name[:-3] + rewrite.PYC_TAIL)
        if rewrite._read_pyc(module, pyc) is not None:
            continue
        source_hash, code = rewrite._rewrite_test(module, config)
        if rewrite.try_makedirs(pyc.parent) and rewrite._write_pyc(state, code, source_hash, pyc):
            rewritten += 1
    compiled = 0
    root = Path(config.rootpath)
    for package in PROJECT_PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            if source.name == "conftest.py" or any(fnmatch.fnmatch(source.name, p) for p in config.getini("python_files")):
                continue  # pytest rewrites these (above)
            cached = Path(importlib.util.cache_from_source(str(source)))
            if _plain_pyc_is_current(source, cached):
                continue
            py_compile.compile(str(source), cfile=str(cached), doraise=False, quiet=2,
                               invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            compiled += 1
    return rewritten, compiled


def _plain_pyc_is_current(source: Path, cached: Path) -> bool:
    import importlib.util

    try:
        header = cached.read_bytes()[:16]
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if header[4:8] == b"\x00\x00\x00\x00":  # a timestamp pyc, as Python writes them where it may
        stat = source.stat()
        return (int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF)
    return header[4:8] == b"\x03\x00\x00\x00" and header[8:16] == importlib.util.source_hash(source.read_bytes())
