#!/usr/bin/env python3
"""Set up the course and open it: `python3 start.py`.

1. creates .venv/ beside this file (once),
2. installs the pinned set of requirements.txt and the coursekit helpers into it
   (again only when requirements.txt or pyproject.toml changed),
3. opens JupyterLab on notebooks/00_start_here.ipynb.

`python3 start.py --setup` does steps 1-2 only (CI, instructors preparing machines).
Anything after `--` goes to `jupyter lab` (e.g. `-- --no-browser --port 8899`).
Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
START_NOTEBOOK = "notebooks/00_start_here.ipynb"
STAMP = VENV / ".course-installed"
MIN_PYTHON = (3, 11)  # FastAPI 0.163, Starlette 1.10 and SQLAlchemy 2.1 need 3.11+


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def setup() -> None:
    if sys.version_info < MIN_PYTHON:
        sys.exit(
            f"start.py: this course needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer "
            f"(you ran {sys.version.split()[0]}): the pinned FastAPI and SQLAlchemy require it."
        )
    if not venv_python().exists():
        print(f"Creating {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == requirements_digest():
        return
    print("Installing the pinned course environment (a few minutes, once) ...", flush=True)
    install = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
               "-r", str(ROOT / "requirements.txt"), "-e", str(ROOT)]
    if subprocess.call(install, cwd=ROOT) != 0:
        sys.exit("start.py: pip install failed (see above). Fix the cause and run start.py again.")
    STAMP.write_text(requirements_digest())


def jupyter_command(extra: list[str] | None = None, python: str | None = None) -> list[str]:
    """The command that opens the course in JupyterLab (a test starts it headless)."""
    command = [python or str(venv_python()), "-m", "jupyter", "lab", START_NOTEBOOK,
               # the whole course in the file browser, not only the start notebook's folder
               f"--ServerApp.root_dir={ROOT}", *(extra or [])]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI run as root; Jupyter refuses it otherwise
    return command


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    setup()
    if "--setup" in argv:
        print(f"Ready. Open the course with: python3 start.py   (or run the tests: {venv_python().relative_to(ROOT)} -m pytest)")
        return 0
    os.chdir(ROOT)
    command = jupyter_command(extra)
    if os.name == "posix":
        # Become JupyterLab (same process id): a kill, Ctrl-C or a closed terminal then reaches the
        # server itself. A child process would keep running after start.py was killed.
        sys.stdout.flush()
        os.execv(command[0], command)
    return subprocess.call(command)  # Windows: Ctrl-C reaches the whole console group anyway


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
