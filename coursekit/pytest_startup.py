"""Loaded first by the suite's pytest processes (`-p coursekit.pytest_startup` in pyproject.toml's addopts).

pytest imports `-p` modules before its entry-point plugins, so this runs before nbval imports
nbformat, which imports jsonschema, which compiles rfc3987_syntax's IRI grammar on import: about
1.4 s of CPU in every pytest process (the controller and each xdist worker), for the "iri" formats
of JSON Schema that no schema of the course uses. Without the module jsonschema skips those two
formats (it imports it under `suppress(ImportError)`), as `course` already does (coursekit.cli.main).
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)
