"""Grading untrusted submissions: each one runs in a bubblewrap sandbox, bounded; the grader judges.

Two halves, two processes:

- the grader (`grade_submission`, outside, trusted): puts the course's own check cells into the
  submission, tags each check cell with a fresh random nonce and adds to it a "canary" check that
  must fail; starts `bwrap` with the notebook and a fresh HMAC key on the harness's stdin; reads
  ONE document from a pipe, signed with that key; validates it against RESULTS_SCHEMA (JSON, never
  pickle); judges every check cell's
  results (the right nonce, exactly one message, the canary failed as it must); writes the row.
- the harness (`python -m coursekit.sandbox`, inside): makes itself non-dumpable (the kernel, same
  uid, can then neither ptrace it nor open its /proc/PID/fd/ pipe), sets the resource limits the
  kernel inherits, runs the notebook with nbclient (`runner.execute(sealed=True)`) and writes what
  each check cell displayed, unjudged, to the pipe.

The sandbox sees: /usr, the Python installation and the venv, the course's `coursekit` package,
all read-only; a fresh size-limited tmpfs at /tmp (the only writable place: the working folder,
HOME, Jupyter's runtime files); its own /proc and /dev; a network namespace with only loopback;
its own pid namespace (it dies with the grader); an environment made from an allow-list; uid 1000
in a user namespace without capabilities (RLIMIT_NPROC then counts this sandbox's processes only;
a root grader runs bwrap as `nobody`, see sandbox_command).

Why bubblewrap: one small Debian/Ubuntu/Fedora package with no daemon, no setuid and no image,
started per submission in milliseconds; it is the sandbox Flatpak ships, so it is maintained and
audited. nsjail is not packaged by Debian 12 and is configured by protobuf files; firejail is
setuid-root with a long CVE history and profiles aimed at desktop apps; Docker/Podman need a daemon
or an image and, by default, leave the network on and no memory or process limits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from coursekit.manifest import CourseError, Lesson

# coursekit.runner and coursekit.checks import pytest (half a second): imported where used, so that
# `course --help` does not pay for them

INSTALL_HINT = (
    "grading runs each submission in a bubblewrap sandbox, and `bwrap` is not installed: "
    "install it (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; it is Linux-only), "
    "or pass --unsafe-no-sandbox to run every submission's code as yourself"
)
UNSAFE_WARNING = (
    "WARNING --unsafe-no-sandbox: every submission's code runs as YOU, with your files, your environment "
    "variables and your network; only the time/CPU/memory/file-size limits apply. Grade only code you trust."
)
SANDBOX_UID = 1000
SANDBOX_LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
NOBODY = 65534  # the uid a root grader runs bwrap as
RESULTS_LIMIT_BYTES = 4_000_000  # far above an honest run's results (a few KB)
PAYLOADS_KEPT = 8  # results messages kept per check cell: one is genuine, more is tampering
MESSAGE_CHARS = 2000
# A submission file is read by the grader OUTSIDE the sandbox: bounded before it is parsed. An
# exercise with all its outputs is well under 1 MB (the largest solution: 72 KB, 60 cells).
NOTEBOOK_LIMIT_BYTES = 16 * 2**20
CELLS_LIMIT = 2000

# What crosses the boundary (harness -> grader). Checked before anything in it is used.
_RESULT_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 200},
        "status": {"type": "string", "maxLength": 20},
        "message": {"type": "string", "maxLength": 100_000},
    },
    "required": ["id", "status", "message"],
}
RESULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "version": {"const": 1},
        "cell_errors": {"type": "array", "items": {"type": "string", "maxLength": 100_000}, "maxItems": 1000},
        "kernel_exit": {"type": ["integer", "null"]},
        "payloads": {
            "type": "object",
            "patternProperties": {"^[0-9]+$": {"type": "array", "maxItems": PAYLOADS_KEPT, "items": {}}},
            "additionalProperties": False,
        },
    },
    "required": ["version", "cell_errors", "kernel_exit", "payloads"],
    "additionalProperties": False,
}
SEALED_SCHEMA = {
    "type": "object",
    "properties": {"mac": {"type": "string", "maxLength": 64}, "body": {"type": "string"}},
    "required": ["mac", "body"],
    "additionalProperties": False,
}
# One results message, as the grader accepts it (anything else counts as forged).
PAYLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "nonce": {"type": "string"},
        "results": {"type": "array", "items": _RESULT_ITEM, "maxItems": 500},
    },
    "required": ["nonce", "results"],
}


@dataclass(frozen=True)
class Limits:
    """Bounds on one submission. Defaults: far above an honest exercise, far below harm."""

    cell_timeout: float = 120  # seconds for one cell (nbclient interrupts it)
    total_timeout: float = 600  # seconds for the whole notebook; the sandbox is killed 30 s later
    memory_mb: int = 2048  # address space per process (RLIMIT_AS)
    cpu_seconds: int = 900  # CPU per process (RLIMIT_CPU)
    processes: int = 256  # processes + threads in the sandbox (RLIMIT_NPROC, per user namespace)
    file_mb: int = 256  # largest file (RLIMIT_FSIZE)
    disk_mb: int = 512  # the sandbox's only writable filesystem (a tmpfs at /tmp)


def bwrap() -> str | None:
    return shutil.which("bwrap")


# ---------------------------------------------------------------------------------------------
# the grader side (outside, trusted)


@dataclass
class Prepared:
    notebook: dict
    nonces: dict[int, str]  # check cell index -> nonce
    canaries: dict[int, tuple[str, str]]  # check cell index -> (canary test name, its failure message)
    ids: dict[int, list[str]]  # check cell index -> the course's check names it defines (what it may report)


def prepare(notebook: dict, solution: dict) -> tuple[Prepared, bool]:
    """The submission with the course's check cells, each tagged with a nonce and given a canary."""
    from coursekit.checks import NONCE_OPTION
    from coursekit.runner import _is_check_cell, _source, check_ids, with_original_checks

    graded, edited = with_original_checks(notebook, solution)
    cells, nonces, canaries, ids = [], {}, {}, {}
    for index, cell in enumerate(graded["cells"]):
        if _is_check_cell(cell):
            source = _source(cell).lstrip()
            first, _, body = source.partition("\n")
            nonce = secrets.token_hex(16)
            name = f"test_{secrets.token_hex(6)}"
            message = secrets.token_hex(12)
            # A check that must fail: a run that reports it passed was tampered with.
            canary = f"\n\n\ndef {name}():\n    assert {secrets.randbelow(10**6) + 1} == 0, {message!r}\n"
            cell = {**cell, "source": f"{first} {NONCE_OPTION}={nonce}\n{body.rstrip()}{canary}", "outputs": []}
            nonces[index], canaries[index], ids[index] = nonce, (name, message), check_ids(source)
        cells.append(cell)
    return Prepared({**graded, "cells": cells}, nonces, canaries, ids), edited


def read_submission(path: Path) -> dict:
    """A submitted notebook, read without trusting the file: a regular file (not a symbolic link,
    which could name the course's solution or your ~/.ssh; not a FIFO, which would block the
    grader), of bounded size, a JSON notebook of bounded cell count whose cells have the shape the
    grader reads. Anything else: CourseError with one line."""
    import stat

    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise CourseError(f"{path}: a symbolic link, not a notebook file: not followed, not graded")
        if not stat.S_ISREG(info.st_mode):
            raise CourseError(f"{path}: not a regular file: not graded")
        if info.st_size > NOTEBOOK_LIMIT_BYTES:
            raise CourseError(f"{path}: {info.st_size // 2**20} MB, larger than a notebook may be "
                              f"({NOTEBOOK_LIMIT_BYTES // 2**20} MB): not graded")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # swapped since lstat: no blocking, no link
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise CourseError(f"{path}: not a regular file: not graded")
            data = handle.read(NOTEBOOK_LIMIT_BYTES + 1)
    except OSError as exc:
        raise CourseError(f"{path}: not readable ({exc.strerror})") from None
    if len(data) > NOTEBOOK_LIMIT_BYTES:
        raise CourseError(f"{path}: larger than a notebook may be ({NOTEBOOK_LIMIT_BYTES // 2**20} MB): not graded")
    try:
        notebook = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CourseError(f"{path}: not a readable notebook ({str(exc)[:200]})") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise CourseError(f"{path}: not a notebook (no list of cells)")
    if len(cells) > CELLS_LIMIT:
        raise CourseError(f"{path}: {len(cells)} cells, more than a notebook may have ({CELLS_LIMIT}): not graded")
    for number, cell in enumerate(cells, start=1):
        source = cell.get("source") if isinstance(cell, dict) else None
        if not (isinstance(cell, dict) and isinstance(cell.get("cell_type"), str) and isinstance(cell.get("metadata", {}), dict)
                and (isinstance(source, str) or isinstance(source, list) and all(isinstance(s, str) for s in source))):
            raise CourseError(f"{path}: cell {number} is not a notebook cell (cell_type, source, metadata): not graded")
    if not isinstance(notebook.get("metadata", {}), dict):
        raise CourseError(f"{path}: its metadata is not an object: not graded")
    return notebook


def submission_lesson(path: Path, notebook: dict, forced: Lesson | None) -> Lesson:
    """The lesson to grade a submission against. Its metadata is the learner's to edit: when it
    names another lesson than the file name does (an easier lesson's checks), it is not trusted."""
    from coursekit.manifest import lesson_by_metadata, lesson_by_name

    if forced is not None:
        return forced
    by_name, by_metadata = lesson_by_name(path), lesson_by_metadata(notebook)
    if by_name and by_metadata and by_name.id != by_metadata.id:
        raise CourseError(f"its metadata says lesson {by_metadata.id} but its file name says lesson {by_name.id}: "
                          "not graded (pass --lesson NN to choose)")
    if by_name or by_metadata:
        return by_name or by_metadata
    raise CourseError("cannot tell which lesson this is (name it NN_slug..., or pass --lesson NN)")


# Code that reaches into the kernel, the check runner or the interpreter: an honest exercise has no
# need of it, and it is how a submission rewrites its check cells before they run (see README).
_REVIEW_SIGNS = re.compile(
    r"get_ipython|input_transformers|ast_transformers|register_(?:cell_|line_)?magic|events\.register|"
    r"\bipytest\b|_pytest|coursekit\.checks|display_pub|\bsettrace\b|\bsetprofile\b|\bctypes\b|"
    r"__builtins__|\bbuiltins\b|\bgc\.get_|sys\.modules|/proc/|\bexec\(|\beval\(|__import__|importlib")


def review_signs(notebook: dict, solution: dict) -> list[str]:
    """Signs of tampering in the submission's own (non-check) cells that the solution has not."""
    from coursekit.runner import _is_check_cell, _source

    def signs(nb: dict) -> set[str]:
        return {m.group(0) for cell in nb["cells"] if cell.get("cell_type") == "code" and not _is_check_cell(cell)
                for m in _REVIEW_SIGNS.finditer(_source(cell))}

    return sorted(signs(notebook) - signs(solution))


# control, format (bidi overrides, zero-width), line/paragraph separators, and surrogates (a file
# name's bytes that are not UTF-8: writing them to the CSV raised UnicodeEncodeError, losing the batch)
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def printable(text: str) -> str:
    """Text from a submission as the grader prints or stores it: no terminal escapes, no carriage
    returns or newlines, no bidi overrides (each could make a row read as another row or score)."""
    import unicodedata

    def shown(c: str) -> str:
        if unicodedata.category(c) not in _INVISIBLE:
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return "".join(shown(c) for c in text)


def spreadsheet_safe(value):
    """A CSV field a spreadsheet will not run as a formula (OWASP's advice: a leading quote)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r", "|", "%"):
        return "'" + value
    return value


def _valid(data, schema) -> bool:
    import jsonschema

    try:
        jsonschema.validate(data, schema)
        return True
    except jsonschema.ValidationError:
        return False


@dataclass
class Judged:
    checks: dict[str, tuple[str, str]]  # id -> (status, message)
    problems: list[str]


def judge(prepared: Prepared, raw: dict) -> Judged:
    """Each check cell's genuine results, or why there are none (raw: schema-checked already)."""
    from coursekit.runner import STATUSES

    checks: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for index, nonce in prepared.nonces.items():
        got = raw["payloads"].get(str(index), [])
        genuine = [p for p in got if _valid(p, PAYLOAD_SCHEMA) and secrets.compare_digest(p["nonce"].encode(), nonce.encode())]
        if len(got) > len(genuine):
            problems.append(f"cell {index + 1}: forged check results were ignored")
        if len(genuine) > 1:
            problems.append(f"cell {index + 1}: tampering: its checks reported more than once; none counted")
            continue
        if not genuine:
            continue  # the checks did not run or did not report: "did not run" below
        name, message = prepared.canaries[index]
        canary = [r for r in genuine[0]["results"] if r["id"] == name]
        if len(canary) != 1 or canary[0]["status"] != "failed" or canary[0]["message"] != message:
            problems.append(f"cell {index + 1}: tampering: the check runner was changed (a check that must fail "
                            "did not); none of its checks counted")
            continue
        # Only the checks this cell defines count, and a check reported twice (a test of the same name
        # that the submission added, say in a Test class, passing) counts as its worst result
        seen: dict[str, int] = {}
        for result in genuine[0]["results"]:
            check_id, status = result["id"], result["status"]
            if check_id not in prepared.ids[index] or status not in STATUSES:
                continue
            seen[check_id] = seen.get(check_id, 0) + 1
            if check_id not in checks or checks[check_id][0] == "passed":
                checks[check_id] = (status, result["message"][:MESSAGE_CHARS])
        for check_id, times in seen.items():
            if times > 1:
                problems.append(f"cell {index + 1}: {check_id} was reported {times} times (a test of the same name "
                                "added by the submission?): its worst result counted")
    return Judged(checks, problems)


# Limits as the cell errors and exit codes show them -> the row's words.
_LIMIT_SIGNS = [
    (re.compile(r"MemoryError|Cannot allocate memory|std::bad_alloc"), "exceeded the memory limit ({memory_mb} MB)"),
    (re.compile(r"No space left on device"), "exceeded the disk limit ({disk_mb} MB)"),
    (re.compile(r"File too large"), "exceeded the file size limit ({file_mb} MB)"),
    (re.compile(r"Resource temporarily unavailable|can't start new thread|BlockingIOError"),
     "exceeded the process limit ({processes} processes and threads)"),
    (re.compile(r"still running after|time limit .* used up"), "exceeded the time limit"),
]


def limits_hit(texts: list[str], kernel_exit: int | None, limits: Limits) -> list[str]:
    hit = []
    for pattern, words in _LIMIT_SIGNS:
        if any(pattern.search(t) for t in texts):
            hit.append(words.format(**asdict(limits)))
    if kernel_exit == -signal.SIGXCPU:
        hit.append(f"exceeded the CPU time limit ({limits.cpu_seconds} s)")
    elif kernel_exit == -signal.SIGKILL:
        hit.append("the kernel was killed (SIGKILL: it outlived its CPU limit's SIGXCPU, or the system ran out of memory)")
    elif kernel_exit is not None and kernel_exit >= 0:
        hit.append(f"the kernel exited by itself (exit code {kernel_exit}) before its checks finished")
    return hit


def sandbox_command(run_dir: Path, limits: Limits, results_fd: int | None, argv: list[str] | None = None) -> list[str]:
    """The command that starts the harness in bwrap for one submission (run_dir: its private folder).

    As root, RLIMIT_NPROC would not hold: the kernel lets any process whose real uid is global root
    fork past it, user namespace or not (bwrap run by root maps the sandbox's uid to root). So a root
    grader starts bwrap as `nobody`, through `unshare --mount` + `setpriv`: in that private mount
    namespace the read-only sources are first bind-mounted under run_dir, so that `nobody` reaches
    them even when they live below a folder only root may enter (a pyenv Python under /root).
    """
    import shlex

    import coursekit

    package_parent = Path(coursekit.__file__).resolve().parent.parent
    venv = Path(sys.prefix)
    read_only = sorted({Path(sys.base_prefix).resolve(), venv, package_parent / "coursekit"})
    as_root = os.geteuid() == 0
    cmd = [
        bwrap(),
        "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--hostname", "grader-sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.disk_mb * 2**20), "--perms", "1777", "--tmpfs", "/tmp",
        # --dev's own tmpfs is as large as half the RAM and writable: /dev/shm gets a bounded one
        # (POSIX shared memory, multiprocessing's semaphores) and the rest of /dev is made read-only
        "--size", str(limits.disk_mb * 2**20), "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
        "--ro-bind", "/usr", "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            cmd += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            cmd += ["--ro-bind", str(target), f"/{link}"]
    staged = []
    for number, path in enumerate(read_only):
        source = path
        if as_root:
            source = run_dir / f"ro{number}"
            source.mkdir()
            staged.append(f"mount --bind {shlex.quote(str(path))} {shlex.quote(str(source))}")
        cmd += ["--ro-bind", str(source), str(path)]
    # /etc: only what name lookups of localhost and the dynamic loader read, plus a passwd naming uid 1000
    for name in ("ld.so.cache", "nsswitch.conf", "hosts", "host.conf", "localtime"):
        if (Path("/etc") / name).exists():
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group"):
        cmd += ["--ro-bind", str(run_dir / name), f"/etc/{name}"]
    home = "/tmp/home"
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": home, "USER": "learner", "LOGNAME": "learner", "LANG": "C.UTF-8", "TZ": "UTC",
        "PYTHONPATH": str(package_parent),
        # the kernel's connection file and unix sockets (coursekit/kernels.py): harness and kernel both see this tmpfs
        "JUPYTER_RUNTIME_DIR": f"{home}/.jupyter-runtime", "IPYTHONDIR": f"{home}/.ipython",
        "MPLCONFIGDIR": f"{home}/.matplotlib", "XDG_CACHE_HOME": f"{home}/.cache",
        "MALLOC_ARENA_MAX": "2",  # glibc's per-thread 64 MB arenas would eat the address-space limit
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if os.environ.get("COURSE_CHECK_DEADLINE_S"):
        env["COURSE_CHECK_DEADLINE_S"] = os.environ["COURSE_CHECK_DEADLINE_S"]
    cmd += ["--clearenv"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    cmd += ["--chdir", "/tmp", "--", *(argv or [sys.executable, "-m", "coursekit.sandbox", str(results_fd)])]
    if not as_root:
        return cmd
    run_dir.chmod(0o755)  # nobody must reach the staged mounts and passwd
    drop = f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- " + shlex.join(cmd)
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", " && ".join([*staged, drop])]


def _run_dir_parent() -> str | None:
    """Where each sandbox's private folder is made: the system's temporary folder (None), unless the
    grader is root and some folder on the way to it is closed to others (a TMPDIR of mode 0700, such as
    the test suite's session folder): bwrap then runs as `nobody`, which must reach the folder, so /tmp."""
    if os.geteuid() != 0:
        return None
    base = Path(tempfile.gettempdir()).resolve()
    return None if all(folder.stat().st_mode & 0o001 for folder in (base, *base.parents)) else "/tmp"


def preflight() -> str:
    """"" when a sandbox starts here, else one line saying why not (user namespaces disabled, ...)."""
    with tempfile.TemporaryDirectory(prefix="course-grade-", dir=_run_dir_parent()) as run_dir:
        run = Path(run_dir)
        for name in ("passwd", "group"):
            (run / name).write_text("")
        cmd = sandbox_command(run, Limits(), None, argv=[sys.executable, "-c", "import coursekit, ipykernel"])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                                  env=SANDBOX_LAUNCH_ENV)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the grading sandbox does not start here ({exc})"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return (f"the grading sandbox does not start here ({why[:200]}); bwrap needs unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 an AppArmor profile for bwrap), "
                "or run course grade as root")
    return ""


def _read_capped(stream, limit: int, into: list) -> None:
    data = bytearray()
    while chunk := stream.read(65536):
        if len(data) <= limit:
            data += chunk[: limit + 1 - len(data)]
    into.append(bytes(data))


def _sealed(body: str, key: str) -> str:
    return hmac.new(bytes.fromhex(key), body.encode(), hashlib.sha256).hexdigest()


def run_harness(request: dict, limits: Limits, *, sandboxed: bool) -> tuple[dict | None, str]:
    """Start the harness (in bwrap, or not), feed it, wait (bounded); (its results, why none).

    The pipe's write end is also held by bwrap's own process in the sandbox, which the kernel may
    open through /proc/1/fd: so the harness signs its one document with a key it alone read from
    its stdin before the kernel started, and anything else on the pipe voids the results.
    """
    key = secrets.token_hex(32)
    stdin_data = json.dumps({**request, "key": key, "sandboxed": sandboxed}).encode()
    read_end, write_end = os.pipe()
    with tempfile.TemporaryDirectory(prefix="course-grade-", dir=_run_dir_parent()) as run_dir:
        run = Path(run_dir)
        (run / "passwd").write_text(f"learner:x:{SANDBOX_UID}:{SANDBOX_UID}:learner:/tmp/home:/bin/sh\n")
        (run / "group").write_text(f"learner:x:{SANDBOX_UID}:\n")
        if sandboxed:
            cmd = sandbox_command(run, limits, write_end)
            # bwrap's own process (pid 1 in the sandbox) keeps the environment it was started with,
            # readable in /proc/1/environ: it gets none of the grader's (--clearenv is for its child)
            env = SANDBOX_LAUNCH_ENV
        else:
            cmd = [sys.executable, "-m", "coursekit.sandbox", str(write_end)]
            env = {**os.environ, "HOME": str(run), "MALLOC_ARENA_MAX": "2"}
        process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(write_end,), start_new_session=True, env=env, cwd="/" if sandboxed else run,
        )
        os.close(write_end)
        results: list[bytes] = []
        errors: list[bytes] = []
        readers = [threading.Thread(target=_read_capped, args=(os.fdopen(read_end, "rb"), RESULTS_LIMIT_BYTES, results), daemon=True),
                   threading.Thread(target=_read_capped, args=(process.stderr, 20_000, errors), daemon=True)]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            try:
                process.stdin.write(stdin_data)
                process.stdin.close()
            except BrokenPipeError:
                pass
            process.wait(timeout=limits.total_timeout + 30)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # bwrap and, by --die-with-parent, its whole pid namespace
                process.wait()
            for reader in readers:
                reader.join(timeout=10)
    if timed_out:
        return None, f"exceeded the time limit ({limits.total_timeout:.0f} s for the notebook): the sandbox was killed"
    data = results[0] if results else b""
    stderr_tail = (errors[0] if errors else b"").decode(errors="replace").strip().splitlines()[-1:]
    if not data:
        why = f"the harness exited ({process.returncode}) without results"
        return None, why + (f": {stderr_tail[0][:300]}" if stderr_tail else " (the submission killed it?)")
    if len(data) > RESULTS_LIMIT_BYTES:
        return None, "its results were larger than the limit: not graded"
    try:
        sealed = json.loads(data)
        if not _valid(sealed, SEALED_SCHEMA):
            raise ValueError("not a sealed document")
    except ValueError:
        return None, "tampering: its results pipe held something else than the harness's one document: not graded"
    if not hmac.compare_digest(sealed["mac"], _sealed(sealed["body"], key)):
        return None, "tampering: its results were not signed by the harness: not graded"
    raw = json.loads(sealed["body"])
    if not _valid(raw, RESULTS_SCHEMA):
        return None, "its results did not match the schema: not graded"
    return raw, ""


def grade_submission(path: Path, forced: Lesson | None, limits: Limits, *, sandboxed: bool = True) -> dict:
    """One CSV row for one submission (of lesson `forced`, else the one it names). Never raises for
    anything the submission does."""
    from coursekit.runner import expected_checks, read_notebook

    row = {"notebook": str(path), "lesson": forced.id if forced else "", "passed": 0, "total": 0, "problem": ""}
    try:
        notebook = read_submission(path)
        lesson = submission_lesson(path, notebook, forced)
    except CourseError as exc:
        return {**row, "problem": str(exc)}
    row["lesson"] = lesson.id
    from coursekit.hunt import is_hunt

    if is_hunt(lesson):
        # the learner's work is their copy of the service, not in the notebook: graded alone, the notebook
        # would test the course's own service and pass every check (coursekit/hunt.py)
        return {**row, "problem": f"not graded: exercise {lesson.id} is an incident hunt, whose work is the folder "
                                  f"exercises/{lesson.stem}/, not the notebook: run `course check {lesson.id}` in the "
                                  "learner's checkout"}
    expected = expected_checks(path, notebook, lesson)
    solution = read_notebook(lesson.solution)
    prepared, edited = prepare(notebook, solution)
    request = {"notebook": prepared.notebook, "cell_timeout": limits.cell_timeout, "total_timeout": limits.total_timeout,
               "limits": asdict(limits)}
    raw, failure = run_harness(request, limits, sandboxed=sandboxed)
    problems = ["its check cells differ from the course's: graded with the original checks"] if edited else []
    if signs := review_signs(notebook, solution):
        problems.append(f"review by hand: its code uses {', '.join(signs)}, which the solution does not (the means to "
                        "rewrite its checks as they run or probe the sandbox): a passed check may be forged")
    if raw is None:
        problems.append(failure)
        judged = Judged({}, [])
        cell_errors: list[str] = []
    else:
        judged = judge(prepared, raw)
        cell_errors = raw["cell_errors"]
        messages = cell_errors + [m for status, m in judged.checks.values() if status == "error"]
        problems += limits_hit(messages, raw["kernel_exit"], limits) + judged.problems
        problems += cell_errors[:1]
    why_not_run = "did not run" + (f": {(problems or [''])[-1]}" if problems else "")
    checks = {i: judged.checks.get(i, ("error", why_not_run)) for i in expected}
    row.update(passed=sum(s == "passed" for s, _ in checks.values()), total=len(checks),
               problem="; ".join(dict.fromkeys(p[:500] for p in problems if p)))
    row.update({i: s for i, (s, _) in checks.items()})
    return row


# ---------------------------------------------------------------------------------------------
# the harness (inside the sandbox)


def _no_dumps() -> None:
    """PR_SET_DUMPABLE 0: processes of the same uid without CAP_SYS_PTRACE (the kernel) cannot
    ptrace this one or open its /proc/PID/fd, mem, environ."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _set_limits(limits: dict, sandboxed: bool) -> None:
    import resource  # POSIX only: imported here so that the CLI still starts on Windows

    mb = 2**20
    chosen = [(resource.RLIMIT_AS, limits["memory_mb"] * mb), (resource.RLIMIT_CPU, limits["cpu_seconds"]),
              (resource.RLIMIT_FSIZE, limits["file_mb"] * mb), (resource.RLIMIT_CORE, 0)]
    if sandboxed:
        # Outside a user namespace RLIMIT_NPROC counts every process of the user: an instructor's
        # desktop alone may exceed it, and root ignores it. Only the sandbox makes it a bound.
        chosen.append((resource.RLIMIT_NPROC, limits["processes"]))
    for name, value in chosen:
        # CPU: SIGXCPU at the soft limit says which limit it was; SIGKILL 5 s later if it is caught
        resource.setrlimit(name, (value, value + 5 if name == resource.RLIMIT_CPU else value))


def harness_main(results_fd: int) -> int:
    results = os.fdopen(results_fd, "w", encoding="utf-8")
    os.set_inheritable(results_fd, False)  # the kernel must not get it
    _no_dumps()
    request = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    key = request.pop("key")
    _set_limits(request["limits"], request["sandboxed"])
    work = Path.cwd() / "work"  # /tmp/work in the sandbox
    work.mkdir(exist_ok=True)
    (Path(os.environ.get("HOME", "/tmp/home"))).mkdir(exist_ok=True)
    from coursekit.runner import execute

    sys.modules.setdefault("rfc3987_syntax", None)  # as coursekit.cli.main: a 2 s import nobody needs here
    run = execute(work / "submission.ipynb", cell_timeout=request["cell_timeout"], total_timeout=request["total_timeout"],
                  notebook_data=request["notebook"], sealed=True, workdir=work)[0]
    out = {"version": 1, "cell_errors": [e[:MESSAGE_CHARS] for e in run.cell_errors[:1000]], "kernel_exit": run.kernel_exit,
           "payloads": {str(i): p[:PAYLOADS_KEPT] for i, p in run.payloads.items()}}
    body = json.dumps(out)
    results.write(json.dumps({"mac": _sealed(body, key), "body": body}))
    results.close()
    return 0


if __name__ == "__main__":
    sys.exit(harness_main(int(sys.argv[1])))
