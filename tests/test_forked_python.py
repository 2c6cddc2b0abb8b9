"""coursekit.forked_python: a run forked from the preloading server is what `python -m MODULE` would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from coursekit import forked_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")

PROBE = '''
import json, os, sys, textwrap

print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "path": sys.path, "main": sys.modules["__main__"].__name__,
    "env": {k: v for k, v in os.environ.items() if k.startswith("PROBE_")},
    "textwrap_touched": hasattr(textwrap, "touched_by_a_run"),
}))
textwrap.touched_by_a_run = True  # a preloaded module: the next run must not see this
print("to stderr\\r\\nsecond line é", file=sys.stderr)
sys.exit(int(os.environ["PROBE_EXIT"]))
'''


@pytest.fixture
def project(tmp_path):
    """A module on PYTHONPATH, a working folder elsewhere, an environment of its own."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "probe.py").write_text(PROBE, encoding="utf-8")
    (tmp_path / "work").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(tmp_path / "lib"), PROBE_NAME="alice", PROBE_EXIT="3")
    return str(tmp_path / "work"), env


def test_a_forked_run_is_what_python_m_would_be(project):
    cwd, env = project
    fresh = subprocess.run([sys.executable, "-m", "probe", "one", "--two"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=60)
    forked = forked_python.run("probe", "one", "--two", cwd=cwd, env=env, timeout=60, preload=("textwrap",))
    assert fresh.returncode == forked.returncode == 3
    assert forked.stderr == fresh.stderr == "to stderr\nsecond line é\n"  # text mode: universal newlines
    assert json.loads(forked.stdout) == json.loads(fresh.stdout)  # argv, folder, sys.path, __main__, env
    assert forked.args == fresh.args
    seen = json.loads(forked.stdout)
    assert seen["path"][:2] == [cwd, env["PYTHONPATH"]] and seen["env"] == {"PROBE_NAME": "alice", "PROBE_EXIT": "3"}


def test_each_run_starts_from_the_preloads_as_imported(project):
    cwd, env = project
    runs = [json.loads(forked_python.run("probe", cwd=cwd, env=env, timeout=60, preload=("textwrap",)).stdout)
            for _ in range(2)]
    assert [run["textwrap_touched"] for run in runs] == [False, False]  # the first run's change died with it


def test_preloaded_imports_are_not_paid_again(tmp_path):
    # pytest runs gc.collect() twice per session: the frozen preloads are not walked again either
    (tmp_path / "heavy.py").write_text("import gc, sqlalchemy.orm\nfor _ in range(4):\n    gc.collect()\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    forked_python.run("heavy", cwd=str(tmp_path), env=env, timeout=120, preload=("sqlalchemy.orm",))
    warm = min(forked_python.run("heavy", cwd=str(tmp_path), env=env, timeout=120, preload=("sqlalchemy.orm",)).cpu_seconds
               for _ in range(3))
    cold = forked_python.run("heavy", cwd=str(tmp_path), env=env, timeout=120, preload=()).cpu_seconds
    assert warm < cold / 3, (warm, cold)  # CPU of the child alone, counted by the kernel: load does not change it


def test_a_signal_and_an_exception_end_it_as_they_end_python(tmp_path):
    (tmp_path / "killed.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", encoding="utf-8")
    (tmp_path / "raises.py").write_text("raise ValueError('boom')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for module, code in (("killed", -15), ("raises", 1)):
        fresh = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, env=env, capture_output=True, text=True)
        forked = forked_python.run(module, cwd=str(tmp_path), env=env, timeout=60)
        assert forked.returncode == fresh.returncode == code
        assert forked.stderr.splitlines()[-1:] == fresh.stderr.splitlines()[-1:]
    assert forked.stderr.endswith("ValueError: boom\n")


def test_a_timeout_kills_the_run_and_the_next_run_works(tmp_path):
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(600)\n", encoding="utf-8")
    (tmp_path / "quick.py").write_text("print('ok')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    started = time.monotonic()
    # the clock starts once the child is forked (the server is up by then): any bound under the sleep's 600 s proves the kill
    with pytest.raises(subprocess.TimeoutExpired):
        forked_python.run("hangs", cwd=str(tmp_path), env=env, timeout=1)
    assert time.monotonic() - started < 60  # not the 600 s of the sleep
    server = forked_python._server.process.pid
    with open(f"/proc/{server}/task/{server}/children", encoding="ascii") as children:
        assert children.read().split() == []  # the run was killed and reaped, nothing left running
    assert forked_python.run("quick", cwd=str(tmp_path), env=env, timeout=60).stdout == "ok\n"


class Interrupted(Exception):
    pass


def test_an_interrupted_run_is_killed_and_the_next_run_works(tmp_path):
    """A notebook's Interrupt lands while the caller waits for the run's output."""
    (tmp_path / "hangs.py").write_text(
        "import os, pathlib, time\npathlib.Path('pid').write_text(str(os.getpid()))\ntime.sleep(600)\n", encoding="utf-8")
    (tmp_path / "quick.py").write_text("print('ok')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    forked_python.run("quick", cwd=str(tmp_path), env=env, timeout=60)
    server = forked_python._server.process.pid

    def interrupt(signum, frame):
        raise Interrupted

    def interrupt_once_the_run_started():
        for _ in range(1200):
            if (tmp_path / "pid").exists():
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGALRM)  # its handler runs in the main thread, inside run()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        threading.Thread(target=interrupt_once_the_run_started, daemon=True).start()
        with pytest.raises(Interrupted):
            forked_python.run("hangs", cwd=str(tmp_path), env=env, timeout=300)
    finally:
        signal.signal(signal.SIGALRM, previous)
    run = int((tmp_path / "pid").read_text())
    assert not _running(run)  # killed, not left to sleep its 600 s
    assert not _running(server)  # stopped and reaped
    assert forked_python.run("quick", cwd=str(tmp_path), env=env, timeout=60).stdout == "ok\n"  # a new server


def test_a_preload_that_fails_is_one_clear_error(tmp_path):
    with pytest.raises(forked_python.ServerFailed, match="No module named 'no_such_module_here'"):
        forked_python.run("json.tool", cwd=str(tmp_path), env=dict(os.environ), timeout=60,
                          preload=("no_such_module_here",))


def test_the_server_stops_with_its_caller(tmp_path):
    caller = textwrap.dedent(f'''
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from coursekit import forked_python
        forked_python.run("json.tool", "--help", cwd=".", env=dict(os.environ), timeout=60)
        print(forked_python._server.process.pid)
    ''')
    done = subprocess.run([sys.executable, "-c", caller], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    server_pid = int(done.stdout.split()[-1])
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)  # stopped and reaped at the caller's exit


def test_the_server_leaves_when_its_caller_is_killed(tmp_path):
    caller = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from coursekit import forked_python
        forked_python.run("json.tool", "--help", cwd=".", env=dict(os.environ), timeout=60)
        print(forked_python._server.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # as nbval stops a kernel: no atexit
    ''')
    done = subprocess.run([sys.executable, "-c", caller], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9
    server_pid = int(done.stdout.split()[-1])
    for _ in range(600):  # it reads end of file on its channel, and exits
        if not _running(server_pid):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the server {server_pid} still runs 30 s after its caller was killed")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for whoever reaps it; that is not the server running)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
