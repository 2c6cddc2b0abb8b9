"""The README's first command opens JupyterLab on the start notebook: start it headless and ask.

Started as a learner starts it, `python3 start.py -- <options>`; stopping that process (its pid)
must stop JupyterLab too, not leave a server running behind it.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time

import httpx

from pathlib import Path

from tests.conftest import ROOT, import_start


def without_iri_grammar(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` for a JupyterLab that skips compiling rfc3987_syntax's IRI grammar as it starts: about 1.5 s of
    CPU, half of its start (jupyter_events imports jsonschema, whose format checkers import rfc3987_syntax).
    jsonschema imports it under suppress(ImportError): a module of that name first on PYTHONPATH that raises
    ImportError leaves only the "iri" and "iri-reference" formats unchecked, as in the suite's pytest processes
    (coursekit/pytest_startup.py) and `course` (coursekit.cli.main). No schema of JupyterLab, its server
    extensions or the course uses them (a module that imported it without that guard would fail to start)."""
    blocked = folder / "no-iri-grammar"
    blocked.mkdir(parents=True, exist_ok=True)
    (blocked / "rfc3987_syntax.py").write_text('raise ImportError("not imported by the tests\' JupyterLab")\n', encoding="utf-8")
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocked), env.get("PYTHONPATH", "")]))}


def served_port(server: subprocess.Popen, runtime_dir: Path, seconds: float = 120) -> int:
    """The port of a JupyterLab started with `--ServerApp.port=0`, read from its runtime file.

    Port 0: JupyterLab takes a port the OS picks as it binds. A free port chosen here first stayed free
    only until another xdist worker's socket (a kernel's, a server's) took it during JupyterLab's
    seconds of start-up, and `port_retries=0` then failed the test.
    """
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"JupyterLab exited: {server.stderr.read()[-2000:]}"
        for info in runtime_dir.glob("jpserver-*.json"):
            try:
                return json.loads(info.read_text(encoding="utf-8"))["port"]
            except (ValueError, KeyError):  # still being written
                pass
        assert time.monotonic() < deadline, f"JupyterLab wrote no runtime file within {seconds:g} s"
        time.sleep(0.25)


def first_answer(server: subprocess.Popen, ask, seconds: float = 60, port: int | None = None):
    """`ask()` (an HTTP request to the JupyterLab `server` is starting), retried until it gets through.

    With `port`, a bare TCP connect waits for JupyterLab to listen first: each failed `httpx.get` built a
    client and its SSL context (~25 ms of CPU), four times a second for as long as JupyterLab took to start.
    """
    deadline = time.monotonic() + seconds
    while port is not None:
        assert server.poll() is None, f"JupyterLab exited: {server.stderr.read()[-2000:]}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert time.monotonic() < deadline, f"JupyterLab did not listen on its port within {seconds:g} s"
        time.sleep(0.25)
    while True:
        assert server.poll() is None, f"JupyterLab exited: {server.stderr.read()[-2000:]}"
        try:
            return ask()
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"JupyterLab did not answer within {seconds:g} s"
            time.sleep(0.25)


def stop(server: subprocess.Popen, seconds: float = 15) -> None:
    """SIGTERM (JupyterLab shuts its kernels down), then SIGKILL if it has not ended within `seconds`."""
    server.terminate()
    try:
        server.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def test_jupyterlab_serves_the_start_notebook(tmp_path):
    start = import_start()
    token = secrets.token_hex(16)
    options = ["--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}"]
    assert start.jupyter_command(options)[1:5] == ["-m", "jupyter", "lab", "notebooks/00_start_here.ipynb"]
    command = [sys.executable, str(ROOT / "start.py"), "--", *options]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    server = subprocess.Popen(command, cwd=ROOT, env=without_iri_grammar(env, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = served_port(server, tmp_path / "runtime")
        base = f"http://127.0.0.1:{port}"
        response = first_answer(server, lambda: httpx.get(f"{base}/api/contents/notebooks/00_start_here.ipynb",
                                                          headers={"Authorization": f"token {token}"}, timeout=5), port=port)
        assert response.status_code == 200, response.text
        notebook = response.json()
        assert notebook["type"] == "notebook" and notebook["name"] == "00_start_here.ipynb"
        assert notebook["content"]["cells"][0]["source"].startswith("# 00 · Start here")
        assert httpx.get(f"{base}/api/contents/notebooks", timeout=5).status_code == 403  # the token is required
        assert httpx.get(f"{base}/lab", headers={"Authorization": f"token {token}"}, timeout=10).status_code == 200
        listing = httpx.get(f"{base}/api/contents", headers={"Authorization": f"token {token}"}, timeout=5).json()
        assert {"notebooks", "exercises", "solutions"} <= {item["name"] for item in listing["content"]}
        server.terminate()  # SIGTERM to the pid start.py started as
        server.wait(timeout=30)
        with socket.socket() as probe:
            refused = probe.connect_ex(("127.0.0.1", port)) != 0
        assert refused, "start.py was stopped but JupyterLab still answers on its port: it outlived start.py"
    finally:
        stop(server)
    assert server.returncode is not None


def test_jupyterlab_opens_a_cell_collapsed_from_its_source_hidden_metadata():
    """The key the generated exercises carry (coursekit.build.COLLAPSED_INPUT), read in the installed
    JupyterLab's own code: a cell loads its collapse state from metadata "jupyter" -> "source_hidden".
    An upgrade that reads another key fails here, not silently in every learner's exercise.
    (Seen in a browser on JupyterLab 4.6: exercise 00's check cell opens as the line "%%ipytest ⋯".)"""
    import importlib.util
    import re
    from pathlib import Path

    from coursekit.build import COLLAPSED_INPUT

    loader = re.compile(r'loadCollapseState\(\)\{.{0,200}?getMetadata\("jupyter"\).{0,120}?\.source_hidden', re.S)
    # largest first: the cells' code is in the core bundle, and the search stops at the first match
    bundles = sorted((Path(importlib.util.find_spec("jupyterlab").origin).parent / "static").glob("*.js"), key=lambda p: -p.stat().st_size)
    texts = (path.read_bytes() for path in bundles)
    found = any(b"loadCollapseState" in text and loader.search(text.decode("utf-8", "replace")) for text in texts)
    assert found, "the installed JupyterLab no longer loads a cell's collapse state from jupyter.source_hidden"
    assert COLLAPSED_INPUT == {"jupyter": {"source_hidden": True}}
