"""Separate processes for a notebook: a job-queue worker, a uvicorn server you can kill -9.

A thread (`run_server`) dies with the notebook and cannot be SIGKILLed on its own. A lesson
about what survives a crash needs real processes:

    with start_process(run_worker, db_url) as worker:   # run_worker(db_url) in a child process
        ...
        worker.kill()                                   # SIGKILL: no finally, no atexit

    with serve_in_process(app) as server:               # uvicorn in a child process
        httpx.post(f"{server.url}/signup", ...)
        server.loop_cpu_seconds()                       # CPU time of its event-loop thread so far
        server.kill()

The child is a fork of the notebook's kernel, so a function or app defined in a cell runs in
it unchanged (nothing to pickle or import). It starts with no running event loop, runs its
target (a coroutine function is run with `asyncio.run`), and always leaves with `os._exit`:
the parent's atexit handlers (which stop the embedded PostgreSQL) never run in a child.
Connections the parent holds are inherited as file descriptors: a target opens its own.

On leaving the block (also when it raises) a child still running gets SIGTERM, then SIGKILL
after `stop_timeout` seconds, and is reaped: no process is left behind. A kernel that dies
without leaving the block (restarted, killed on a timeout) cannot stop its children: each child
watches its parent and exits within a fraction of a second once the parent is gone, so no
orphaned worker keeps taking jobs or holding a port. POSIX only (fork).
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every child started here that is still running (pid -> ChildProcess): stop_all() ends them.
_RUNNING: dict[int, "ChildProcess"] = {}


@dataclass
class ChildProcess:
    """A forked child: its pid, and how it ended (None while it runs)."""

    pid: int
    name: str
    exit_code: int | None = None  # os.waitstatus_to_exitcode: -9 after SIGKILL
    log_path: str = ""  # where the child's stdout, stderr and logging go (deleted with the block)

    def output(self) -> str:
        """What the child wrote so far (its tracebacks, its log): for a failure message."""
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def poll(self) -> int | None:
        """The exit code if the child has ended (it is reaped), else None."""
        if self.exit_code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped elsewhere
                self.exit_code = self.exit_code if self.exit_code is not None else -1
                _RUNNING.pop(self.pid, None)
                return self.exit_code
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                _RUNNING.pop(self.pid, None)
        return self.exit_code

    @property
    def alive(self) -> bool:
        return self.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the child to end; its exit code or None."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.exit_code

    def signal(self, signum: int) -> None:
        if self.alive:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> int | None:
        """SIGKILL, as the OOM killer or a power cut would: the child runs no code at all."""
        self.signal(signal.SIGKILL)
        return self.wait(5)

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL if the child is still there after `timeout` seconds."""
        if self.alive:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.kill()
        return self.exit_code


def _redirect_output(log_path: str) -> None:
    """The child's stdout, stderr and log handlers write to its own file, never to the kernel's.

    The notebook's sys.stdout sends over the kernel's sockets: a child writing to it would
    interleave with the parent's messages (and nbval would compare what a worker logged).
    """
    import logging

    old = {id(sys.stdout), id(sys.stderr), id(sys.__stdout__), id(sys.__stderr__)}
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in old:
                handler.setStream(sys.stderr)


def _exit_with_parent(parent_pid: int) -> None:
    """In the child: leave as soon as the parent is gone (it can no longer stop or reap us)."""

    def watch() -> None:
        while os.getppid() == parent_pid:  # once the parent dies, the child is re-parented (to init or a subreaper)
            time.sleep(0.1)
        os._exit(70)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_child(target: Callable[..., Any], args: tuple, kwargs: dict, log_path: str, parent_pid: int) -> None:
    """In the child: run the target, never return to the parent's code."""
    code = 0
    try:
        _exit_with_parent(parent_pid)
        _redirect_output(log_path)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        asyncio.events._set_running_loop(None)  # the fork happened inside the kernel's running loop
        asyncio.set_event_loop(None)
        if inspect.iscoroutinefunction(target):
            asyncio.run(target(*args, **kwargs))
        else:
            target(*args, **kwargs)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


@contextmanager
def start_process(target: Callable[..., Any], *args: Any, stop_timeout: float = 3.0, **kwargs: Any) -> Iterator[ChildProcess]:
    """Run `target(*args, **kwargs)` in a forked child process for the duration of the block."""
    if not hasattr(os, "fork"):
        raise RuntimeError("start_process needs os.fork (Linux, macOS): run this lesson there or in WSL")
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd, log_path = tempfile.mkstemp(prefix="course-child-", suffix=".log")
    os.close(log_fd)
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        _run_child(target, args, kwargs, log_path, parent_pid)
    child = ChildProcess(pid=pid, name=getattr(target, "__name__", "child"), log_path=log_path)
    _RUNNING[pid] = child
    try:
        yield child
    finally:
        try:
            child.stop(stop_timeout)
        finally:
            Path(log_path).unlink(missing_ok=True)


def stop_all() -> list[int]:
    """Stop every child started here that still runs (run at the interpreter's exit). Their pids."""
    stopped = []
    for child in list(_RUNNING.values()):
        if child.alive:
            child.stop(1.0)
            stopped.append(child.pid)
    return stopped


atexit.register(stop_all)  # a kernel shut down normally stops its children itself (children leave by os._exit)


@dataclass
class ServerProcess:
    """What `serve_in_process` yields: the base URL and the child running uvicorn."""

    url: str
    port: int
    process: ChildProcess

    def kill(self) -> int | None:
        return self.process.kill()

    def loop_cpu_seconds(self) -> float:
        """CPU seconds the server's event-loop thread has used so far (user + system).

        uvicorn runs in the child's main thread, whose thread id is the child's pid. Linux counts
        each thread's CPU time in nanoseconds (`/proc/<pid>/task/<tid>/schedstat`, first field, the
        clock `time.thread_time()` reads for the calling thread). A difference of two readings is
        what the server itself spent, however busy the machine is (wall time would also count the
        other processes the scheduler ran meanwhile). Elsewhere (macOS), psutil's CPU time of the
        whole process: coarser, and it also counts the child's other threads.
        """
        pid = self.process.pid
        seconds = main_thread_cpu_seconds(pid)
        if seconds is not None:
            return seconds
        if self.process.alive and not os.path.exists("/proc/self/task"):
            import psutil

            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
        raise RuntimeError(f"the server process {pid} has exited: no CPU time to read")


def main_thread_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of a process's main thread, to the nanosecond: Linux's per-task counter
    (`/proc/<pid>/task/<pid>/schedstat`, first field, the clock `time.thread_time()` reads for its own
    thread). None where there is no such file: not Linux, or the process has gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", encoding="ascii") as stats:
            return int(stats.read().split()[0]) / 1e9
    except FileNotFoundError:
        return None


def _serve(app: Any, sock: socket.socket, log_level: str) -> None:
    import uvicorn

    from coursekit.server import _PromptServer

    class _PromptOnSignal(_PromptServer):
        """run_server's server (no fixed 0.1 s waits on the way out), woken at once by the SIGTERM of `stop()`:
        uvicorn's own handler only sets should_exit, which its main loop looks at every 0.1 s."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if self.should_exit and not self.force_exit:
                self.stop()

    # loop="asyncio" as in run_server: the same event loop on every platform (uvloop is Linux-only)
    _PromptOnSignal(uvicorn.Config(app, log_level=log_level, lifespan="on", loop="asyncio")).run(sockets=[sock])


@contextmanager
def serve_in_process(app: Any, *, log_level: str = "warning", startup_timeout: float = 60.0) -> Iterator[ServerProcess]:
    """Serve `app` with uvicorn in a forked child process on a free port of 127.0.0.1.

    The socket is bound and listening before the fork, so the port is known at once; the
    block starts when the server answers HTTP (a GET of a path that may well be a 404).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    try:
        with start_process(_serve, app, sock, log_level) as child:
            sock.close()  # the child has its copy: once it dies, the port refuses connections at once
            url = f"http://127.0.0.1:{port}"
            _wait_until_serving(port, child, startup_timeout)
            yield ServerProcess(url=url, port=port, process=child)
    finally:
        sock.close()


def _wait_until_serving(port: int, child: ChildProcess, timeout: float) -> None:
    """Until an HTTP request gets any response (uvicorn accepted it: startup is done)."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive:
            raise RuntimeError(f"the server process exited with code {child.exit_code} before serving (see its log above)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                probe.sendall(b"GET /__ready__ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if probe.recv(16).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server process did not answer on port {port} within {timeout} s")
        time.sleep(0.02)
