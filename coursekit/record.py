"""(Authors) Execute a lesson or solution notebook in place and store clean outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from coursekit.build import KEPT_CELL_METADATA, dumps


def clean(notebook: dict) -> dict:
    """Keep only what nbval and readers need: no timings, no machine-specific metadata."""
    for cell in notebook["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA}
        for output in cell.get("outputs", []):
            output.get("metadata", {}).pop("execution", None)
    meta = notebook.get("metadata", {})
    notebook["metadata"] = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        **({"course": meta["course"]} if "course" in meta else {}),
    }
    return notebook


def record(path: Path, *, cell_timeout: float = 300) -> float:
    """Run all cells (stopping at the first error) and write the notebook back, cleaned."""
    import nbformat
    from nbclient import NotebookClient

    started = time.monotonic()
    notebook = nbformat.read(path, as_version=4)
    from nbclient.exceptions import CellExecutionError

    from coursekit.kernels import AsyncUnixSocketKernelManager
    from coursekit.manifest import CourseError

    client = NotebookClient(
        notebook,
        timeout=cell_timeout,
        kernel_name="python3",
        kernel_manager_class=AsyncUnixSocketKernelManager,  # no TCP ports to race for (coursekit/kernels.py)
        record_timing=False,
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = next((i for i, c in enumerate(notebook.cells, 1) if any(o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
        raise CourseError(f"{path.name}: cell {failed} raised {exc.ename}: {exc.evalue} (nothing was written)") from None
    data = clean(json.loads(nbformat.writes(notebook)))
    path.write_text(dumps(data), encoding="utf-8")
    return time.monotonic() - started
