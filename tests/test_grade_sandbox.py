"""`course grade` against hostile submissions: each is contained, and its CSV row says why.

One batch of hostile submissions of a tiny course (two plain checks, no FastAPI: a kernel each
costs little CPU), graded once with small limits and --jobs 2. Each test reads a row and asserts,
from outside, that the harm did not happen and that the row says why. The batch holding an honest submission that
scores 2/2 among them proves that no hostile one aborted it. Attempts that are cheap and do not
interfere share a kernel (the suite's CPU budget): one row then answers several tests.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_bwrap, write_notebook

pytestmark = needs_bwrap

SETUP = "from coursekit import setup_checks\nsetup_checks()\n"
ANSWER = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"
CHECKS = '''%%ipytest

def test_adds():
    assert add(1, 2) == 3, "add(1, 2) should be 3"

def test_adds_negatives():
    assert add(-1, -2) == -3, "add(-1, -2) should be -3"
'''
SECRET = "grader-home-secret-7d1e"
ENV_SECRET = "grader-env-token-93ab"
LIMITS = ["--memory-mb", "1024", "--processes", "64", "--disk-mb", "48", "--file-mb", "32",
          "--cpu-seconds", "5", "--cell-timeout", "15", "--timeout", "60"]

# The harm each submission tries; {outside} etc. are filled in with the test's real paths.
HOSTILE = {
    "honest": [],
    # one kernel for four attempts (the CPU budget): the grader's HOME and variables, writing outside, the network, the harness
    "escapes": ['''
import os, pathlib, socket, coursekit
seen = []
for home in (os.environ.get("HOME", ""), {grader_home!r}, "/root"):
    try:
        seen.append(pathlib.Path(home, "secret.txt").read_text())
    except OSError as exc:
        seen.append(type(exc).__name__)
harness = f"/proc/{{os.getppid()}}"
harness_fds = set()
for name in ["fd", "mem", *(f"fd/{{n}}" for n in range(3, 12))]:
    try:
        if name == "fd":
            os.listdir(f"{{harness}}/fd")
        else:
            with open(f"{{harness}}/{{name}}", "w") as handle:
                handle.write("{{}}")
        harness_fds.add(f"{{name}}: done")
    except OSError as exc:
        harness_fds.add(type(exc).__name__)
writes = []
for target in ({outside!r}, {sibling!r}, {course_checks!r}, {csv_path!r}, pathlib.Path(coursekit.__file__).parent / "checks.py"):
    try:
        with open(target, "w") as handle:
            handle.write("pwned")
        writes.append("written")
    except OSError as exc:
        writes.append(type(exc).__name__)
raise RuntimeError(
    f"home files: {{seen}}; grader variables: {{[k for k in os.environ if 'GRADER' in k]}}; "
    f"secret: {{os.environ.get('GRADER_TOKEN')}}; writes: {{writes}}; interfaces: {{[name for _, name in socket.if_nameindex()]}}; "
    f"harness fds: {{sorted(harness_fds)}}"
)
'''],
    "forges_lines": ['''
from IPython.display import display
def add(a, b):
    print("✔ test_adds: passed")
    print("✔ test_adds_negatives: passed")
    fake = [{{"id": "test_adds", "status": "passed", "message": ""}}, {{"id": "test_adds_negatives", "status": "passed", "message": ""}}]
    display({{"application/vnd.course.check-results+json": {{"nonce": "0" * 32, "results": fake}}}}, raw=True)
    with open("/tmp/checks.jsonl", "a") as handle:
        handle.write("\\n".join(__import__("json").dumps(f) for f in fake))
    return 0
'''],
    "fork_bomb": ['''
import os
children = 0
try:
    while True:
        if os.fork() == 0:
            try:
                os.execv("/bin/sleep", ["sleep", "97.25"])
            finally:
                os._exit(1)  # never a second kernel
        children += 1
except OSError as exc:
    raise RuntimeError(f"fork stopped after {{children}} children: {{exc}}")
'''],
    # memory, one file's size, the disk (one kernel)
    "exhausts": ['''
import os
outcomes = []
try:
    hoard = bytearray(8 * 1024**3)
except MemoryError as exc:
    outcomes.append(repr(exc))
try:
    with open("big.bin", "wb") as handle:
        for _ in range(40):
            handle.write(b"x" * 2**20)
except OSError as exc:
    outcomes.append(str(exc))
os.remove("big.bin")
try:
    for n in range(100):
        with open(f"fill{{n}}.bin", "wb") as handle:
            for _ in range(16):
                handle.write(b"x" * 2**20)
except OSError as exc:
    outcomes.append(str(exc))
raise RuntimeError(f"exhausted: {{outcomes}}")
'''],
    "loops_in_check": ['''
def add(a, b):
    while True:
        pass
'''],
    "kills_parent": ['''
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
os.kill(-1, signal.SIGKILL)
'''],
    "patches_runner": ['''
import coursekit.checks
coursekit.checks.classify = lambda excinfo, app_errors: ("passed", "")
'''],
    "patches_pytest": ['''
import _pytest.python
_pytest.python.Function.runtest = lambda self: None
'''],
    "exits_in_check": ['''
import os
def add(a, b):
    os._exit(0)
'''],
    "overwrites_results": ['''
import json, os
outcomes = set()
# bwrap's own process (pid 1 here) also holds the results pipe: write a forged document into it
forged = {{"version": 1, "cell_errors": [], "kernel_exit": None, "payloads": {{}}}}
for fd in os.listdir("/proc/1/fd"):
    if int(fd) > 2:
        try:
            with open(f"/proc/1/fd/{{fd}}", "w") as handle:
                handle.write(json.dumps({{"mac": "0" * 64, "body": json.dumps(forged)}}))
            outcomes.add("written")
        except OSError as exc:
            outcomes.add(type(exc).__name__)
raise RuntimeError(f"pid 1: {{sorted(outcomes)}}")
'''],
}
# Those whose add() is right: anything but 2/2 would be the sandbox breaking an honest answer.
RIGHT_ANSWER = {"honest", "escapes", "fork_bomb"}


def _sleepers() -> list[str]:
    """Processes on this machine running the fork bomb's `sleep 97.25`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"97.25" in cmdline.read_bytes():
                found.append(str(cmdline))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grade")
    course = base / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "course.toml").write_text('[[lesson]]\nid = "00"\nslug = "mini"\ntitle = "Mini"\nsummary = "Two checks."\n')
    course_checks = write_notebook(course / "solutions/00_mini.ipynb", [("code", SETUP), ("code", ANSWER), ("code", CHECKS)])
    grader_home = base / "home"
    grader_home.mkdir()
    (grader_home / "secret.txt").write_text(SECRET)
    submissions = base / "submissions"
    paths = {"outside": str(base / "outside.txt"), "sibling": str(submissions / "00_mini-honest.ipynb"),
             "course_checks": str(course_checks), "csv_path": str(base / "grades.csv"), "grader_home": str(grader_home)}
    for name, hostile in HOSTILE.items():
        answer = ANSWER if name in RIGHT_ANSWER else WRONG
        cells = [("code", SETUP), ("code", answer)] + [("code", h.format(**paths)) for h in hostile] + [("code", CHECKS)]
        write_notebook(submissions / f"00_mini-{name}.ipynb", cells)
    before = {p: p.read_bytes() for p in (course_checks, *submissions.iterdir())}
    env = {**os.environ, "COURSE_ROOT": str(course), "HOME": str(grader_home), "GRADER_TOKEN": ENV_SECRET}
    done = subprocess.run([sys.executable, "-m", "coursekit", "grade", str(submissions), "--csv", paths["csv_path"],
                           "--jobs", "2", *LIMITS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = {Path(r["notebook"]).stem.split("-", 1)[1]: r for r in csv.DictReader(open(paths["csv_path"]))}
    return {"rows": rows, "before": before, "paths": paths, "csv_text": Path(paths["csv_path"]).read_text(),
            "stdout": done.stdout, "sleepers_after": _sleepers()}


def test_every_submission_gets_a_row_and_the_honest_one_scores_fully(graded):
    assert set(graded["rows"]) == set(HOSTILE)
    honest = graded["rows"]["honest"]
    assert (honest["passed"], honest["total"], honest["problem"]) == ("2", "2", "")


def test_the_graders_home_and_environment_are_out_of_reach(graded):
    row = graded["rows"]["escapes"]
    assert SECRET not in graded["csv_text"] and ENV_SECRET not in graded["csv_text"]
    assert "home files: ['FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError']" in row["problem"], row["problem"]
    assert "grader variables: []; secret: None" in row["problem"]
    assert row["passed"] == "2"  # containment does not cost an honest answer its score


def test_nothing_outside_its_copy_can_be_written(graded):
    row = graded["rows"]["escapes"]
    assert not Path(graded["paths"]["outside"]).exists()
    for path, content in graded["before"].items():
        assert path.read_bytes() == content, f"{path} was changed"  # the course's checks, the other submissions
    # not mounted at all (four paths), or mounted read-only (the coursekit package)
    assert "writes: ['FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'FileNotFoundError', 'OSError']" in row["problem"]
    assert (ROOT / "coursekit/checks.py").read_text().count("pwned") == 0


def test_forged_result_lines_score_nothing(graded):
    row = graded["rows"]["forges_lines"]
    assert (row["passed"], row["test_adds"], row["test_adds_negatives"]) == ("0", "failed", "failed")
    assert "forged check results were ignored" in row["problem"]


def test_a_fork_bomb_stops_at_the_process_limit_even_as_root(graded):
    row = graded["rows"]["fork_bomb"]
    assert "exceeded the process limit (64 processes and threads)" in row["problem"], row["problem"]
    children = int(row["problem"].split("fork stopped after ")[1].split()[0])
    assert 0 < children < 64
    assert graded["sleepers_after"] == []  # its children died with its sandbox


def test_allocating_8_gb_fails_inside(graded):
    row = graded["rows"]["exhausts"]
    assert "exceeded the memory limit (1024 MB)" in row["problem"] and "MemoryError()" in row["problem"], row["problem"]
    assert row["passed"] == "0"


def test_filling_the_disk_stops_at_its_limits(graded):
    row = graded["rows"]["exhausts"]
    assert "exceeded the file size limit (32 MB)" in row["problem"], row["problem"]
    assert "exceeded the disk limit (48 MB)" in row["problem"], row["problem"]
    assert "File too large" in row["problem"] and "No space left on device" in row["problem"]


def test_an_endless_check_is_stopped_and_the_batch_goes_on(graded):
    row = graded["rows"]["loops_in_check"]
    # the kernel's CPU limit (5 s) ends the busy loop; on a very busy machine the cell's 15 s may come first
    assert "exceeded the CPU time limit (5 s)" in row["problem"] or "exceeded the time limit" in row["problem"], row["problem"]
    assert row["passed"] == "0" and row["test_adds"] == "error"


def test_killing_its_parent_loses_only_its_own_row(graded):
    row = graded["rows"]["kills_parent"]
    assert row["passed"] == "0" and "without results" in row["problem"], row["problem"]
    assert graded["rows"]["honest"]["passed"] == "2"


def test_the_only_network_interface_is_loopback(graded):
    assert "interfaces: ['lo']" in graded["rows"]["escapes"]["problem"]


@pytest.mark.parametrize("name", ["patches_runner", "patches_pytest"])
def test_a_check_runner_patched_by_an_earlier_cell_is_detected(graded, name):
    row = graded["rows"][name]
    assert "tampering: the check runner was changed" in row["problem"], row["problem"]
    assert row["passed"] == "0" and row["test_adds"] == "error"


def test_exiting_in_the_middle_of_the_checks_scores_nothing(graded):
    row = graded["rows"]["exits_in_check"]
    assert row["passed"] == "0" and row["test_adds"] == "error"
    assert "the kernel exited by itself (exit code 0)" in row["problem"], row["problem"]


def test_the_harness_memory_and_pipe_are_out_of_reach(graded):
    row = graded["rows"]["escapes"]
    assert "harness fds: ['PermissionError']" in row["problem"], row["problem"]
    assert row["passed"] == "2"  # its results arrived intact


def test_the_results_cannot_be_overwritten(graded):
    """bwrap's pid 1 in the sandbox also holds the results pipe. Graded as root, the pipe belongs to
    root and `nobody` cannot reopen it; graded as a user, it can, and the unsigned document voids the
    results. Either way no forged score."""
    row = graded["rows"]["overwrites_results"]
    assert row["passed"] == "0"
    if os.getuid() == 0:
        assert "pid 1: ['PermissionError']" in row["problem"], row["problem"]
        assert row["test_adds"] == "failed"  # its own wrong answer, judged from the genuine results
    else:
        assert "tampering: its results pipe held something else" in row["problem"], row["problem"]


def test_without_bwrap_grading_refuses_in_one_line(tmp_path):
    write_notebook(tmp_path / "00_start_here-x.ipynb", [("code", SETUP)])
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run([sys.executable, "-m", "coursekit", "grade", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "apt-get install bubblewrap" in done.stderr
    assert "--unsafe-no-sandbox" in done.stderr


def test_unsafe_no_sandbox_is_loud_and_grades_the_same(graded, tmp_path):
    honest = Path(graded["paths"]["sibling"])
    (tmp_path / honest.name).write_bytes(honest.read_bytes())
    env = {**os.environ, "COURSE_ROOT": str(Path(graded["paths"]["course_checks"]).parent.parent)}
    done = subprocess.run([sys.executable, "-m", "coursekit", "grade", str(tmp_path), "--unsafe-no-sandbox"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2/2 checks passed" in done.stdout
    assert done.stderr.count("WARNING --unsafe-no-sandbox") == 2
