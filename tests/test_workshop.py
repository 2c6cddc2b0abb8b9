"""Workshops: the README's nbgitpuller link, tried on a real JupyterLab with the nbgitpuller server
extension of the course environment, pulling the course from a git server on 127.0.0.1 (git's own
smart-HTTP backend). The first click clones and lands on the start notebook; a later click, after
the learner edited an exercise and the course changed it, keeps the learner's file whole; then
`course update` merges the course's change into it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from urllib.parse import unquote, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from coursekit.workshop import binder_badge, hub_link, pull_link
from tests.conftest import ROOT
from tests.test_cli import course as run_course  # `course` in-process (its docstring says why)
from tests.test_jupyterlab import first_answer, served_port, stop, without_iri_grammar
from tests.test_update import LEARNER_ENV, git

README_REPO = "https://github.com/OWNER/fastapi-advanced-patterns"
README_HUB = "https://hub.example.org"


def test_the_readme_gives_the_tested_link_formats():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert hub_link(README_HUB, README_REPO) in readme
    assert binder_badge(README_REPO) in readme
    assert "course workshop-link" in readme and "course update" in readme


def test_nbgitpuller_is_pinned_and_enabled_in_the_course_environment():
    pins = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^nbgitpuller==\d", pins, re.M)
    # pip installs the switch that enables it into the environment's jupyter config (a data file of the
    # wheel): no `jupyter server extension enable` step on a hub image or Binder. The pull test proves it answers.
    switch = Path(sys.prefix) / "etc/jupyter/jupyter_server_config.d/nbgitpuller.json"
    assert json.loads(switch.read_text())["ServerApp"]["jpserver_extensions"] == {"nbgitpuller": True}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # the test's output stays readable
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def git_http_app(project_root: Path):
    """git's smart HTTP protocol: `git http-backend` (CGI) behind a WSGI callable."""

    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": environ["PATH_INFO"], "QUERY_STRING": environ.get("QUERY_STRING", ""),
               "REQUEST_METHOD": environ["REQUEST_METHOD"], "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
               "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""), "GIT_CONFIG_NOSYSTEM": "1",
               "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", "")}
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        headers, status = [], "200 OK"
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]

    return app


@pytest.fixture
def git_server(tmp_path):
    """A bare repository of the course (its files as they are in this checkout), served over HTTP."""
    author, served = tmp_path / "author", tmp_path / "served"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (author / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, author / rel)
    git(author, "init", "-q", "-b", "main")
    git(author, "add", "-A")
    git(author, "commit", "-q", "-m", "the course")
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(served / "course.git"))
    git(author, "push", "-q", str(served / "course.git"), "main")
    server = make_server("127.0.0.1", 0, git_http_app(served), server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield author, f"http://127.0.0.1:{server.server_port}/course.git", served / "course.git"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def jupyterlab(tmp_path, request):
    """A learner's JupyterLab (a hub's single-user server): the course environment, an empty home.
    The course's git server (git_server) is built while JupyterLab starts: both take seconds, neither needs the other."""
    home = tmp_path / "home"
    home.mkdir()
    token = secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               "--ServerApp.port=0", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={home}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    env = {**os.environ, **LEARNER_ENV, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    server = subprocess.Popen(command, cwd=home, env=without_iri_grammar(env, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        request.getfixturevalue("git_server")
        base = f"http://127.0.0.1:{served_port(server, tmp_path / 'runtime')}/"  # port 0: see served_port
        with httpx.Client(base_url=base, headers={"Authorization": f"token {token}"}, timeout=30) as client:
            first_answer(server, lambda: client.get("api/status"))
            yield base, client, home
    finally:
        stop(server)


def click(client: httpx.Client, base: str, link: str) -> str:
    """What the learner's browser does with the link: the page, then its script's event stream."""
    page = client.get(link.removeprefix(base))
    assert page.status_code == 200, page.text[:500]
    data = {k: unquote(v) for k, v in re.findall(r'data-([a-z]+)="([^"]*)"', page.text)}
    query = urlencode({"repo": data["repo"], "targetpath": data["targetpath"], "branch": data["branch"]})
    phases = []
    with client.stream("GET", f"git-pull/api?{query}", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                phases.append(event)
                if event["phase"] in ("finished", "error"):
                    break
    assert phases[-1]["phase"] == "finished", phases[-1]
    return data["path"]


def test_the_pull_link_clones_opens_the_start_notebook_and_keeps_an_edited_exercise(jupyterlab, git_server):
    author, repo_url, bare = git_server
    base, client, home = jupyterlab
    folder = "fastapi-advanced-patterns"
    landing = click(client, base, pull_link(base, repo_url, folder=folder))
    assert landing == f"lab/tree/{folder}/notebooks/00_start_here.ipynb"
    assert client.get(landing).status_code == 200  # where the page sends the learner: JupyterLab on the notebook
    start = client.get(f"api/contents/{folder}/notebooks/00_start_here.ipynb").json()
    assert start["content"]["cells"][0]["source"].startswith("# 00 · Start here")
    assert {"notebooks", "exercises", "solutions", "course.toml"} <= {i["name"] for i in client.get(f"api/contents/{folder}").json()["content"]}

    # the learner answers exercise 00 and saves it in JupyterLab (the contents API is what Save calls)
    exercise = f"api/contents/{folder}/exercises/00_start_here.ipynb"
    nb = client.get(exercise).json()["content"]
    stub = next(c for c in nb["cells"] if "raise NotImplementedError" in c["source"])
    answer = ('    @app.get("/hello")\n    def hello(name: str = "world") -> dict[str, str]:\n'
              '        return {"message": f"Hello, {name}"}  # mine')
    stub["source"] = re.sub(r"    # TODO:.*\n    raise NotImplementedError\(.*\)", lambda _: answer, stub["source"])
    assert client.put(exercise, json={"type": "notebook", "format": "json", "content": nb}).status_code == 200
    saved = (home / folder / "exercises/00_start_here.ipynb").read_bytes()

    # the course changes that exercise's stub cell (the hint) and publishes
    from coursekit.build import build
    from coursekit.manifest import _load, find_lesson

    solution = author / "solutions/00_start_here.ipynb"
    solution.write_text(solution.read_text().replace("### BEGIN SOLUTION: add GET /hello", "### BEGIN SOLUTION: add a GET /hello route"))
    _load.cache_clear()
    build(author, only=[find_lesson("00", author)])
    git(author, "commit", "-q", "-am", "exercise 00: a clearer hint")
    git(author, "push", "-q", str(bare), "main")

    click(client, base, pull_link(base, repo_url, folder=folder))  # the instructor's link, clicked again
    clone = home / folder
    assert "add a GET /hello route" in (clone / "solutions/00_start_here.ipynb").read_text()  # the course arrived
    assert (clone / "exercises/00_start_here.ipynb").read_bytes() == saved  # the learner's file, whole
    log = git(clone, "log", "--format=%an %s", "-3")
    assert "Automatic commit by nbgitpuller" in log  # the learner's edit, committed by nbgitpuller before its merge

    done = run_course("update", "--no-check", cwd=clone, env={**LEARNER_ENV, "PYTHONPATH": str(ROOT), "COURSE_ROOT": str(clone)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exercises/00_start_here.ipynb, cell 4: the course changed this cell; your answer is in its new version" in done.stdout
    merged = json.loads((clone / "exercises/00_start_here.ipynb").read_text())
    course = json.loads(git(clone, "show", "origin/main:exercises/00_start_here.ipynb"))
    assert merged["metadata"]["course"] == course["metadata"]["course"]  # now based on the course's new version
    assert '"message": f"Hello, {name}"}  # mine' in "".join(next(c for c in merged["cells"] if c["id"] == stub["id"])["source"])


def workshop_link(*args: str):
    return run_course("workshop-link", *args, env={"COURSE_ROOT": str(ROOT)})


def test_workshop_link_refuses_a_link_that_cannot_work_in_one_line():
    """A hub without its scheme once gave a relative link ("hub.example.org/hub/user-redirect/...") and
    an ssh repo a link the hub cannot clone; both printed with exit 0."""
    no_scheme = workshop_link("--repo", README_REPO, "--hub", "hub.example.org")
    assert no_scheme.returncode == 2 and no_scheme.stdout == ""
    assert no_scheme.stderr.strip() == "course: --hub hub.example.org: give the hub's full address, e.g. https://hub.example.org"
    ssh = workshop_link("--repo", "git@github.com:OWNER/fastapi-advanced-patterns.git", "--hub", README_HUB)
    assert ssh.returncode == 2 and ssh.stdout == "" and "--repo git@github.com:" in ssh.stderr
    assert len(ssh.stderr.strip().splitlines()) == 1 and "Traceback" not in ssh.stderr
    elsewhere = workshop_link("--repo", "https://gitlab.com/OWNER/fastapi-advanced-patterns", "--hub", README_HUB)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert hub_link(README_HUB, "https://gitlab.com/OWNER/fastapi-advanced-patterns") in elsewhere.stdout
    assert "Binder: no link" in elsewhere.stdout
    both = workshop_link("--repo", README_REPO, "--hub", README_HUB)
    assert both.returncode == 0 and hub_link(README_HUB, README_REPO) in both.stdout and binder_badge(README_REPO) in both.stdout
