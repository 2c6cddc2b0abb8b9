"""`course site`: the course as a static website, built offline, read in a real browser.

The site is built once for this file, by `course site --output <a temporary folder>`, from the
committed notebooks.
The browser part serves it on 127.0.0.1 and opens the home page and every lesson page in headless
Chromium: no console error, no failed or outside request, every mermaid block drawn as an SVG
diagram, every stored plot an image that loaded. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from contextlib import redirect_stdout
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import pytest

from coursekit.cli import main
from coursekit.hunt import is_hunt
from coursekit.manifest import CourseError, lessons
from coursekit.site import MARKER, build_site, html_links, mermaid_js, plan, uncommitted_notebooks, vendored_mermaid
from tests.browser import POLL_MS, chromium_page, screenshot, skip_or_fail
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
CDN_HOSTS = ("cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis.com", "mathjax")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    try:
        vendored_mermaid(ROOT)  # fetched once from the pinned npm tarball; offline after that
    except CourseError as exc:
        skip_or_fail(f"the site's pinned mermaid could not be fetched: {exc}")
    folder = tmp_path_factory.mktemp("site") / "site"
    output = io.StringIO()
    with mock.patch.dict(os.environ, {"COURSE_ROOT": str(ROOT)}), redirect_stdout(output):
        assert main(["site", "--output", str(folder)]) == 0  # as `course site --output DIR`
    assert f"wrote {1 + 3 * len(LESSONS)} pages to {folder}" in output.getvalue()
    assert f"python3 -m http.server --directory {folder}" in output.getvalue()
    return folder


def stored(notebook: Path) -> tuple[int, int]:
    """(mermaid blocks in markdown cells, stored PNG plots) of a committed notebook."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    mermaid = sum("".join(c["source"]).count("```mermaid") for c in cells if c["cell_type"] == "markdown")
    plots = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
    return mermaid, plots


def test_every_lesson_exercise_and_solution_has_a_page_with_navigation_and_a_run_command(site):
    assert (site / MARKER).is_file() and (site / "_static" / "mermaid.min.js").stat().st_size > 1_000_000
    home = (site / "index.html").read_text(encoding="utf-8")
    for lesson in LESSONS:
        assert f'href="notebooks/{lesson.stem}.html"' in home and lesson.title in home
        for folder in ("notebooks", "exercises", "solutions"):
            page = (site / folder / f"{lesson.stem}.html").read_text(encoding="utf-8")
            assert f"<title>{lesson.id} · " in page, "the browser tab names the lesson"
            assert 'href="../_static/index.css"' in page and len(page) < 1_000_000  # JupyterLab's CSS shared, not inlined
            assert "python3 start.py" in page and f"open <code>{folder}/{lesson.stem}.ipynb</code>" in page
            assert 'rel="prev"' in page and 'href="../index.html"' in page
            assert "mybinder.org" not in page, "no repository is configured in course.toml, so no Binder link"
        exercise = (site / "exercises" / f"{lesson.stem}.html").read_text(encoding="utf-8")
        assert f"course check {lesson.id}" in exercise
        if is_hunt(lesson):  # the incident hunt: no stubs, the symptoms and where the learner's copy lives
            assert f"exercises/{lesson.stem}/taskservice/" in exercise and "The incidents, as they were reported" in exercise
        else:
            assert "NotImplementedError" in exercise  # the stubs are shown
    last = (site / "solutions" / f"{LESSONS[-1].stem}.html").read_text(encoding="utf-8")
    assert 'rel="next"' not in last


def test_every_local_link_and_asset_resolves_and_nothing_comes_from_a_cdn(site):
    broken, outside = [], []
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        outside += [f"{page.name}: {host}" for host in CDN_HOSTS if host in text]
        outside += [f"{page.name}: {url}" for url in re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', text)]
        for target in re.findall(r'(?:src|href)="([^"#:]+)(?:#[^"]*)?"', text):
            if not (page.parent / target).resolve().is_file():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert len(pages) == 1 + 3 * len(LESSONS)
    assert not outside, f"assets from outside the site: {outside[:5]}"
    assert not broken, f"links to nothing: {broken[:10]}"


def test_notebook_links_point_at_pages_and_web_links_stay():
    text = "[ex](../exercises/01_x.ipynb) [lesson](03_y.ipynb#part-2) [docs](https://example.org/a.ipynb)"
    assert html_links(text) == "[ex](../exercises/01_x.html) [lesson](03_y.html#part-2) [docs](https://example.org/a.ipynb)"


def test_a_configured_repository_adds_binder_links_and_a_wrong_one_is_a_clear_error(tmp_path):
    lesson = '[[lesson]]\nid = "00"\nslug = "start_here"\ntitle = "Start"\nsummary = "s"\n'
    (tmp_path / "course.toml").write_text(lesson + '[site]\nrepository = "https://github.com/acme/course"\n')
    pages = plan(tmp_path)
    assert [p.output for p in pages] == ["index.html", "notebooks/00_start_here.html",
                                         "exercises/00_start_here.html", "solutions/00_start_here.html"]
    assert pages[2].run["binder"] == "https://mybinder.org/v2/gh/acme/course/HEAD?labpath=exercises/00_start_here.ipynb"
    assert pages[1].next.href == "../exercises/00_start_here.html" and pages[1].previous.href == "../index.html"
    (tmp_path / "course.toml").write_text(lesson + '[site]\nrepository = "git@github.com:acme/course"\n')
    with pytest.raises(CourseError, match=r"must be https://github.com/OWNER/REPO"):
        plan(tmp_path)


def test_pages_read_as_nbconvert_writes_them_without_its_beautifulsoup_pass():
    """The site's exporter skips HTMLExporter's re-parse of each page and makes its two edits (alt text,
    tabindex) itself: to BeautifulSoup (what nbconvert serializes with) the pages are the same."""
    import nbformat
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    from coursekit.site import NO_ALT, site_exporter_class

    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    nb = nbformat.v4.new_notebook(metadata={"language_info": {"name": "python"}})
    nb.cells = [
        nbformat.v4.new_markdown_cell('# A page\n![a plot](plot.png) <img src="raw.png"> <img src="x.png" alt="has one"/>'),
        nbformat.v4.new_code_cell("print('hi')\nplot()", execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="hi\n"),
            nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
            nbformat.v4.new_output("execute_result", execution_count=1,
                                   data={"text/html": '<div class="inner">a <b>table</b></div>', "text/plain": "t"}),
        ]),
        nbformat.v4.new_code_cell("1 / 0", execution_count=2, outputs=[
            nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=["boom"])]),
    ]
    theirs, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    ours, _ = site_exporter_class()(template_name="lab").from_notebook_node(nb)
    assert ours != theirs and str(BeautifulSoup(ours, features="html.parser")) == theirs
    assert theirs.count(f'alt="{NO_ALT}"') == 2 and theirs.count('tabindex="0"') >= 6  # the edits are there to compare


def test_a_folder_not_written_by_course_site_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CourseError, match="was not written by `course site`"):
        build_site(ROOT, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on 127.0.0.1 (as `python -m http.server` serves it)."""
    handler = partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


RENDERED_MERMAID = """() => [...document.querySelectorAll('.jp-Mermaid')].map(block => {
  const img = block.querySelector('figure img');
  const svg = img ? decodeURIComponent(img.src.replace('data:image/svg+xml,', '')) : '';
  return {warning: block.classList.contains('jp-mod-warning'), width: img ? img.naturalWidth : 0,
          svg: img !== null && img.src.startsWith('data:image/svg+xml,') && svg.includes('<svg') && svg.includes('<g')};
})"""
PLOTS = """() => [...document.querySelectorAll('.jp-OutputArea-output img')]
  .filter(img => img.src.startsWith('data:image/png'))
  .map(img => ({complete: img.complete, width: img.naturalWidth}))"""


def test_home_and_every_lesson_page_render_in_chromium_with_diagrams_plots_and_no_errors(served):
    problems, diagrams_seen, plots_seen = [], 0, 0
    with chromium_page() as page:
        page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
        page.on("response", lambda response: response.status >= 400 and problems.append(f"{response.status}: {response.url}"))

        # every request the page makes is seen here; one to anywhere but the site is a problem. (Not page.route:
        # routing turns the browser's HTTP cache off, and each page then loaded and compiled mermaid's 3 MB again.)
        page.on("request", lambda request: request.url.startswith((served, "data:"))
                or problems.append(f"outside request: {request.url}"))
        targets = [("index.html", None)] + [(f"notebooks/{lesson.stem}.html", lesson.notebook) for lesson in LESSONS]
        for path, notebook in targets:
            page.goto(f"{served}/{path}", wait_until="load")
            assert page.locator("nav.course-nav a.course-home").count() == 2, path
            if notebook is None:
                assert page.locator("table a").count() == 3 * len(LESSONS)
                screenshot(page, "site_home.png")
                continue
            mermaid, plots = stored(notebook)
            page.wait_for_function("document.querySelectorAll('.jp-Mermaid:not(.jp-RenderedMermaid)').length === 0",
                                   timeout=30_000, polling=POLL_MS)
            drawn = page.evaluate(RENDERED_MERMAID)
            assert len(drawn) == mermaid, f"{path}: {len(drawn)} mermaid blocks on the page, {mermaid} in the notebook"
            assert all(d["svg"] and d["width"] > 0 and not d["warning"] for d in drawn), f"{path}: {drawn}"
            images = page.evaluate(PLOTS)
            assert len(images) == plots and all(i["complete"] and i["width"] > 0 for i in images), f"{path}: {images}"
            diagrams_seen += len(drawn)
            plots_seen += len(images)
            if notebook.stem.startswith("12_"):  # diagrams and plots: the richest page
                screenshot(page, "site_lesson_12_top.png")  # navigation and the run-it box
                page.locator(".jp-RenderedMermaid").first.scroll_into_view_if_needed()
                screenshot(page, "site_lesson_12_diagram.png")
    assert not problems, "\n".join(problems[:20])
    assert diagrams_seen >= len(LESSONS) and plots_seen >= 1, (diagrams_seen, plots_seen)


def _fake_registry(monkeypatch, tarball: bytes) -> list[str]:
    fetched: list[str] = []

    def urlopen(url, timeout):
        fetched.append(url)
        return io.BytesIO(tarball)

    monkeypatch.setattr("coursekit.site.urllib.request.urlopen", urlopen)
    return fetched


def _tarball(bundle: bytes) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("package/dist/mermaid.min.js")
        info.size = len(bundle)
        archive.addfile(info, io.BytesIO(bundle))
    return buffer.getvalue()


def _pin(root: Path, tarball: bytes) -> None:
    import base64
    import hashlib

    (root / "site").mkdir()
    (root / "site" / "mermaid.json").write_text(json.dumps({
        "name": "mermaid", "version": "0.0.1", "tarball": "https://registry.example/mermaid-0.0.1.tgz",
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode(),
        "file": "package/dist/mermaid.min.js"}))


def test_mermaid_is_fetched_once_from_the_pinned_tarball_and_a_tampered_one_is_refused(tmp_path, monkeypatch):
    good = _tarball(b"/* mermaid */")
    _pin(tmp_path, good)
    fetched = _fake_registry(monkeypatch, good)
    bundle = vendored_mermaid(tmp_path)
    assert bundle == mermaid_js(tmp_path) and bundle.read_bytes() == b"/* mermaid */"
    vendored_mermaid(tmp_path)  # vendored: no second download
    assert fetched == ["https://registry.example/mermaid-0.0.1.tgz"]

    bundle.unlink()
    _fake_registry(monkeypatch, _tarball(b"/* mermaid, with something added */"))
    with pytest.raises(CourseError, match="does not match the integrity hash"):
        vendored_mermaid(tmp_path)
    assert not bundle.exists() and not list(bundle.parent.glob("*.partial"))  # nothing of it kept


def test_notebooks_changed_since_the_last_commit_are_named(tmp_path):
    """The site shows the notebooks as they are on disk: `course site` in a learner's checkout once
    published their attempt without a word (the README said "from the committed notebooks")."""
    import subprocess

    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "a",
           "GIT_AUTHOR_EMAIL": "a@example.org", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.org"}
    assert uncommitted_notebooks(tmp_path) == []  # not a git checkout
    for folder in ("notebooks", "exercises", "solutions"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "03_x.ipynb").write_text("{}")
    (tmp_path / "notes.md").write_text("not a page")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "course"], cwd=tmp_path, check=True, env=env)
    assert uncommitted_notebooks(tmp_path) == []
    (tmp_path / "exercises" / "03_x.ipynb").write_text('{"cells": ["my attempt"]}')
    (tmp_path / "notebooks" / "04_new.ipynb").write_text("{}")
    (tmp_path / "notes.md").write_text("changed, not a page")
    assert uncommitted_notebooks(tmp_path) == ["exercises/03_x.ipynb", "notebooks/04_new.ipynb"]


def test_a_missing_mermaid_pin_is_one_line_not_a_traceback(tmp_path):
    with pytest.raises(CourseError, match="mermaid.json .* is missing or unreadable"):
        vendored_mermaid(tmp_path)
