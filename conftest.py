"""pytest wiring for the course (options live in pyproject.toml [tool.pytest.ini_options]).

- nbval validates notebooks/ and solutions/ against their committed outputs,
  with nbval_sanitize.cfg for what legitimately varies.
- exercises/ and attempts/ are learners' work: never collected, even when
  someone types `pytest --nbval` from the project root.
- xdist runs with --dist loadfile: all cells of one notebook on one worker, in order.
  Each generated exercise's stub run is an item of its lesson's corpus unit (one kernel for both).
- Each lesson and solution gets a second Run All in nbval's kernel (tests/run_all_again.py).
- nbval's kernels listen on unix sockets, not TCP ports (coursekit/kernels.py says why).
- Scratch files go to a folder on a tmpfs where there is one (scratch_on_tmpfs below).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import nbval.kernel
import pytest

from coursekit.kernels import UnixSocketKernelManager

# nbval builds its kernel manager from this module global (nbval.kernel.start_new_kernel) and has no
# option for it; tests/test_kernels.py fails if a later nbval stops reading it.
nbval.kernel.KernelManager = UnixSocketKernelManager

# Lessons and solutions: a second Run All in nbval's kernel (tests/run_all_again.py).
pytest_plugins = ["tests.run_all_again"]

collect_ignore_glob = ["exercises/*", "attempts/*", ".venv/*"]


# Lessons, checks and tests make throwaway SQLite databases, PostgreSQL data folders and project copies
# under tempfile.gettempdir(). On a disk each SQLite commit waits for its fsync: 29 ms per commit on this
# kind of machine under the suite's load, 0.4 ms on a tmpfs. The first pytest process (the controller)
# makes one folder on /dev/shm for the session and removes it at the end; xdist workers, kernels and
# every subprocess inherit TMPDIR, and a nested pytest (lesson 09) keeps its parent's folder.
SCRATCH_ENV = "COURSE_PYTEST_SCRATCH"
SCRATCH_MIN_FREE = 2 * 2**30  # room for the PostgreSQL data folders that run at once, with margin


def scratch_on_tmpfs(mounts: Path = Path("/proc/mounts"), shm: Path = Path("/dev/shm")) -> str | None:
    """Point TMPDIR at a new folder on /dev/shm when it is a tmpfs with room; the folder, or None."""
    if os.environ.get(SCRATCH_ENV):
        return None
    try:
        on_tmpfs = any(line.split()[1:3] == [str(shm), "tmpfs"] for line in mounts.read_text().splitlines())
        stats = os.statvfs(shm)
    except OSError:  # no /proc (macOS) or no /dev/shm: the system's temporary folder, as before
        return None
    if not on_tmpfs or stats.f_bavail * stats.f_frsize < SCRATCH_MIN_FREE:
        return None
    folder = tempfile.mkdtemp(prefix="course-pytest-", dir=shm)
    os.environ["TMPDIR"] = os.environ[SCRATCH_ENV] = folder
    tempfile.tempdir = None  # gettempdir() looks again, at TMPDIR
    return folder


_scratch_made_here: str | None = scratch_on_tmpfs()


def pytest_unconfigure(config) -> None:
    if _scratch_made_here:
        shutil.rmtree(_scratch_made_here, ignore_errors=True)


ONE_UNIT_PER_ITEM = {
    "tests/test_openapi_contracts.py",  # one app per item: about 20-40 s each, mostly waiting on the app
}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class LessonScheduling(LoadFileScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in ONE_UNIT_PER_ITEM else path

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:
                self.ordered = True
                for scope in work_order(self.workqueue):
                    self.workqueue.move_to_end(scope)
            super()._assign_work_unit(node)

    return LessonScheduling(config, log)


# Seconds each unit took on its worker in the suite's own run (tests/measure_units.py: they rank the
# units, they are no budget). A unit missing here (a new lesson) counts its items at its kind's mean
# seconds per item.
ROOT_DIR = Path(__file__).parent
UNIT_SECONDS_FILE = ROOT_DIR / "tests" / "unit_seconds.json"


def unit_seconds() -> dict[str, float]:
    try:
        return json.loads(UNIT_SECONDS_FILE.read_text(encoding="utf-8"))["seconds"]
    except (OSError, ValueError, KeyError):  # no measurements: every item counts the same
        return {}


def work_order(units: dict[str, dict], seconds: dict[str, float] | None = None) -> list[str]:
    """The order the workers take the units in.

    A corpus keeps a CPU busy; a lesson or solution notebook mostly waits (servers, sleeps that
    timing demos need). Each kind is spread evenly over the run, so the waits of one worker are
    filled by another's CPU work (all the corpora first left a tail of notebooks and idle CPUs).
    Within a kind, the longest first, so the run ends on short units: measured seconds
    (tests/unit_seconds.json), not items, rank them (lesson 09's corpus has half the entries of
    lesson 01's and takes longer; one fuzzed app is one item of half a minute).
    """
    def kind(scope: str) -> str:
        if scope.startswith("tests/corpus/"):
            return "corpus"
        if scope.startswith(("notebooks/", "solutions/")):
            return "notebook"
        return "other"

    seconds = unit_seconds() if seconds is None else seconds
    per_item: dict[str, float] = {}  # a kind's mean seconds per item, over its measured units
    for k in ("corpus", "notebook", "other"):
        measured = [s for s in units if kind(s) == k and s in seconds]
        items = sum(len(units[s]) for s in measured)
        per_item[k] = sum(seconds[s] for s in measured) / items if items else 1.0

    def estimate(scope: str) -> float:
        return seconds.get(scope, len(units[scope]) * per_item[kind(scope)])

    by_kind: dict[str, list[str]] = {}
    for scope in sorted(units, key=lambda s: (-estimate(s), s)):
        by_kind.setdefault(kind(scope), []).append(scope)
    # each unit at its fraction of the way through its own kind's list
    placed = [((index + 0.5) / len(scopes), scope) for scopes in by_kind.values() for index, scope in enumerate(scopes)]
    return [scope for _, scope in sorted(placed)]
