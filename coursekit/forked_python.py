"""`python -m MODULE ARGS` as a fresh process that skips the imports every run repeats.

Lesson 09 runs pytest on small projects a dozen times per Run All, each in a process of its own (the
lesson is about what a test process keeps between tests). A plain `python -m pytest` spent ~0.8 s of
its ~1 s of CPU importing FastAPI, SQLAlchemy and pydantic, every time. Here one server process,
started on first use and stopped with the kernel, imports the `preload` modules once; each run is a
child forked from it, which then becomes what a fresh `python -m MODULE ARGS` would be:

- working folder `cwd` and environment `env` (os.environ replaced), `sys.argv` and `sys.path` as a
  fresh interpreter sets them (`cwd` first for `-m`, then PYTHONPATH's entries, then the installed
  paths), `sys.modules['__main__']` the module run;
- the caller's stdin, and new pipes for stdout and stderr (passed over a unix socket): output and
  text decoding as `subprocess.run(..., capture_output=True, text=True)` gives them;
- its exit code (-N when a signal N ended it); a timeout kills it and raises `TimeoutExpired`.

What a child cannot be is a process that imported the preloaded modules itself: their import-time
state (module globals, registries filled at import) is the server's, copied unchanged into each child
by the fork, so what one run changes in them the next run never sees. Those objects are frozen
(`gc.freeze()`, as Python's docs advise before a fork without exec), so that a child's garbage
collections skip them: a cycle among them that a run makes garbage is not collected during the run.
The hash seed is the server's (a fresh process draws its own). Environment variables read at interpreter start or by a preload's
import come from the server's environment: a run whose environment differs from it anywhere but
PYTHONPATH gets a new server. The server imports nothing else and starts no thread (fork copies only
the calling thread). Linux only; elsewhere `run` is `subprocess.run`.

The caller stops and reaps the server at exit. A caller killed outright (nbval stops its kernels with
SIGKILL) cannot: the server then leaves by itself at end of file on its channel, and its CPU time,
with its children's, goes to whoever adopts it, not to the caller's parent (measure a notebook's CPU
as a subreaper, or per run with `CompletedProcess.cpu_seconds`).
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

_MESSAGE_BYTES = 1 << 20  # one request (argv, cwd, env) or answer: a SOCK_SEQPACKET message


class ServerFailed(RuntimeError):
    """The server could not start (a preload failed to import) or ended unexpectedly."""


def _exit_code(value: object) -> int:
    """What `python` exits with for `raise SystemExit(value)` (printing a non-int value to stderr)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _become_fresh_run(request: dict, fds: list[int], base_path: list[str]) -> None:
    """In the forked child: become `python -m MODULE ARGS` started in `cwd` with `env`; never returns."""
    code = 1
    try:
        for target, fd in enumerate(fds):  # stdin, stdout, stderr
            os.dup2(fd, target)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        extra = [os.path.abspath(p) for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        paths = list(dict.fromkeys(extra + base_path))  # site.py's order: PYTHONPATH, then the installed ones
        sys.path[:] = [os.getcwd(), *paths]  # `-m` puts the working folder first
        import importlib

        importlib.invalidate_caches()
        sys.argv = ["-m", *request["args"]]  # runpy replaces argv[0] with the module's file, as `-m` does
        import runpy

        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_.code)
        except BaseException:  # what the interpreter does with an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    finally:
        os._exit(code)


def _serve(channel_fd: int, preload: Sequence[str]) -> None:
    """The server: import `preload`, then fork one child per request, one request at a time."""
    channel = socket.socket(fileno=channel_fd)
    try:
        import importlib

        for name in preload:
            importlib.import_module(name)
        if threading.active_count() != 1:
            raise ServerFailed(f"importing {list(preload)} started a thread: forking would copy only this one")
        import gc

        # What the preloads keep alive lives as long as every child: frozen (Python's advice before a fork
        # without exec), a child's collections skip it. pytest collects twice at the end of every session.
        gc.collect()
        gc.freeze()
    except BaseException as error:
        import traceback

        channel.send(json.dumps({"error": "".join(traceback.format_exception_only(error)).strip()}).encode())
        return
    base_path = list(sys.path)  # started with -P and no PYTHONPATH: the installed paths only
    channel.send(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, _MESSAGE_BYTES, 3)
        except OSError:
            return
        if not message:  # the caller closed its end (its kernel stopped): so does the server
            return
        pid = os.fork()
        if pid == 0:
            channel.close()
            _become_fresh_run(json.loads(message), fds, base_path)
        for fd in fds:
            os.close(fd)
        try:
            channel.send(json.dumps({"pid": pid}).encode())
            _, status, usage = os.wait4(pid, 0)
            channel.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status),
                                     "cpu_seconds": usage.ru_utime + usage.ru_stime}).encode())
        except OSError:  # the caller is gone (it closed its end after an interrupted run)
            return


class _Server:
    def __init__(self, env: Mapping[str, str], preload: tuple[str, ...]) -> None:
        self.env, self.preload = dict(env), preload
        self.channel, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        try:
            # -P: no script folder on sys.path (the server needs only the standard library)
            self.process = subprocess.Popen(
                [sys.executable, "-P", os.path.abspath(__file__), str(server_end.fileno()), *preload],
                env=server_env, pass_fds=[server_end.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        finally:
            server_end.close()
        answer = self._receive()
        if "error" in answer:
            self.close()
            raise ServerFailed(f"the forked-python server could not import its preloads: {answer['error']}")

    def _receive(self) -> dict:
        message = self.channel.recv(_MESSAGE_BYTES)
        if not message:
            raise ServerFailed("the forked-python server ended unexpectedly")
        return json.loads(message)

    def close(self) -> None:
        self.channel.close()  # the server leaves at end of file
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def run(self, module: str, args: Sequence[str], cwd: str, env: Mapping[str, str], timeout: float | None
            ) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", module, *args]
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            request = {"module": module, "args": list(args), "cwd": os.path.abspath(cwd), "env": dict(env)}
            stdin = 0 if _is_open(0) else os.open(os.devnull, os.O_RDONLY)
            try:
                socket.send_fds(self.channel, [json.dumps(request).encode()], [stdin, out_write, err_write])
            finally:
                if stdin != 0:
                    os.close(stdin)
        finally:
            os.close(out_write)
            os.close(err_write)
        try:
            pid = self._receive()["pid"]
            try:
                output, timed_out = _read_until_closed({out_read: bytearray(), err_read: bytearray()}, timeout, pid)
            except BaseException:  # interrupted (a notebook's KeyboardInterrupt): the run must not outlive the call
                _kill(pid)
                raise
        finally:
            for fd in (out_read, err_read):
                try:
                    os.close(fd)
                except OSError:  # already closed at its end of file
                    pass
        ended = self._receive()
        stdout, stderr = (_text(bytes(output[fd])) for fd in (out_read, err_read))
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
        done = subprocess.CompletedProcess(command, ended["returncode"], stdout, stderr)
        done.cpu_seconds = ended["cpu_seconds"]  # the child's own CPU time (user + system)
        return done


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _text(data: bytes) -> str:
    """Decoded as subprocess's text mode decodes: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_until_closed(buffers: dict[int, bytearray], timeout: float | None, pid: int) -> tuple[dict, bool]:
    """Read each pipe to its end; past `timeout`, SIGKILL the child (as subprocess.run does) and read on."""
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            wait = None if deadline is None or timed_out else max(0.0, deadline - time.monotonic())
            ready = selector.select(wait)
            if not ready and not timed_out:
                timed_out = True
                _kill(pid)
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if chunk:
                    buffers[key.fd] += chunk
                else:
                    selector.unregister(key.fd)
    return buffers, timed_out


_lock = threading.Lock()
_server: _Server | None = None


def _stop_server() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None


if __name__ != "__main__":
    atexit.register(_stop_server)  # stopped and reaped: its CPU is counted with the caller's


def run(module: str, *args: str, cwd: str, env: Mapping[str, str], timeout: float | None = None,
        preload: Iterable[str] = ()) -> subprocess.CompletedProcess:
    """`subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)`, in a child forked from a server that already imported `preload`."""
    global _server
    if not sys.platform.startswith("linux"):
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    preload = tuple(preload)
    same_start = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    with _lock:
        if _server is not None and (_server.preload != preload or _server.env != same_start
                                    or _server.process.poll() is not None):
            _stop_server()
        if _server is None:
            _server = _Server(same_start, preload)
        try:
            return _server.run(module, args, cwd, env, timeout)
        except subprocess.TimeoutExpired:
            raise  # the run was killed and reaped: the server goes on
        except BaseException:  # the server failed, or the call was interrupted mid-run: the next run starts a new one
            _stop_server()
            raise


if __name__ == "__main__":  # the server: python -P forked_python.py CHANNEL_FD PRELOAD...
    _serve(int(sys.argv[1]), sys.argv[2:])
