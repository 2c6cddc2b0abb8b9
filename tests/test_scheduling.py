"""conftest.work_order: the order xdist's workers take the units in."""

from conftest import work_order

SIZES = {  # unit -> number of items
    "tests/corpus/01.toml": 70, "tests/corpus/09.toml": 35,
    "notebooks/06.ipynb": 50, "notebooks/01.ipynb": 30, "solutions/06.ipynb": 20, "solutions/01.ipynb": 10,
    "tests/test_cli.py": 15, "tests/test_build.py": 3,
}


def test_corpora_and_notebooks_are_spread_over_the_run_largest_first():
    order = work_order({unit: dict.fromkeys(range(n), False) for unit, n in SIZES.items()}, seconds={})  # items only
    assert sorted(order) == sorted(SIZES)
    corpora = [order.index(s) for s in ("tests/corpus/01.toml", "tests/corpus/09.toml")]
    notebooks = [order.index(s) for s in ("notebooks/06.ipynb", "notebooks/01.ipynb", "solutions/06.ipynb", "solutions/01.ipynb")]
    assert corpora == sorted(corpora) and notebooks == sorted(notebooks)  # largest first within a kind
    assert corpora[0] < notebooks[2] and corpora[1] > notebooks[1]  # not all the corpora first, nor last
    assert order[-1] in ("solutions/01.ipynb", "tests/test_build.py")  # the run ends on a small unit


def test_measured_seconds_rank_units_not_their_item_counts():
    units = {unit: dict.fromkeys(range(n), False) for unit, n in SIZES.items()}
    seconds = {"tests/corpus/01.toml": 40.0, "tests/corpus/09.toml": 110.0, "notebooks/06.ipynb": 30.0}
    order = work_order(units, seconds)
    assert order.index("tests/corpus/09.toml") < order.index("tests/corpus/01.toml")  # 35 items but the longest
    # unmeasured units count their items at their kind's measured mean (30 s / 50 items): notebooks/01's
    # 30 items (18 s) before solutions/06's 20 (12 s), and after the measured 30 s of notebooks/06
    notebooks = [order.index(s) for s in ("notebooks/06.ipynb", "notebooks/01.ipynb", "solutions/06.ipynb", "solutions/01.ipynb")]
    assert notebooks == sorted(notebooks)
    units["notebooks/14.ipynb"] = dict.fromkeys(range(200), False)  # a new lesson, not measured yet: 120 s
    with_new = work_order(units, seconds)
    assert [s for s in with_new if s.startswith(("notebooks/", "solutions/"))][0] == "notebooks/14.ipynb"


def test_the_committed_measurements_name_units_that_exist():
    from conftest import ROOT_DIR, unit_seconds

    seconds = unit_seconds()
    assert seconds, "tests/unit_seconds.json is missing or empty: the scheduler would rank by items only"
    gone = [unit for unit in seconds if not (ROOT_DIR / unit.split("::")[0]).is_file()]
    assert not gone, (f"tests/unit_seconds.json names units that no longer exist: {gone}; remove them, or measure again: "
                      "`pytest -p tests.measure_units --unit-seconds=tests/unit_seconds.json` on an idle machine")


def test_the_suite_keeps_its_scratch_files_on_a_tmpfs_where_there_is_one(tmp_path, monkeypatch):
    """conftest.scratch_on_tmpfs: this process (a worker or the controller) and what it starts use the
    session's folder on /dev/shm when it is a tmpfs; elsewhere the system's temporary folder, unchanged."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from conftest import SCRATCH_ENV, scratch_on_tmpfs

    mounts = Path("/proc/mounts")
    shm_is_tmpfs = mounts.exists() and any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts.read_text().splitlines())
    if shm_is_tmpfs:
        folder = os.environ[SCRATCH_ENV]
        assert Path(folder).parent == Path("/dev/shm") and tempfile.gettempdir() == folder
        assert str(tmp_path).startswith(folder + "/")
        child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"], capture_output=True, text=True, check=True)
        assert child.stdout.strip() == folder
    # a nested pytest keeps its parent's folder; a /dev/shm that is no tmpfs is not used
    assert scratch_on_tmpfs() is None
    monkeypatch.delenv(SCRATCH_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # restored after the test
    monkeypatch.setenv("TMPDIR", tempfile.gettempdir())
    (tmp_path / "mounts").write_text("/dev/vda / ext4 rw 0 0\nshm /dev/shm ext4 rw 0 0\n")
    assert scratch_on_tmpfs(mounts=tmp_path / "mounts") is None
    assert scratch_on_tmpfs(mounts=tmp_path / "absent") is None
