"""Loaded first by the suite's pytest processes (`-p coursekit.pytest_startup` in pyproject.toml's addopts).

pytest imports `-p` modules before its entry-point plugins, so this runs before nbval imports
nbformat, which imports jsonschema, which compiles rfc3987_syntax's IRI grammar on import: about
1.4 s of CPU in every pytest process (the controller and each xdist worker), for the "iri" formats
of JSON Schema that no schema of the course uses. Without the module jsonschema skips those two
formats (it imports it under `suppress(ImportError)`), as `course` already does (coursekit.cli.main).
"""

import sys

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
