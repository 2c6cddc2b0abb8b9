"""The course as a static website: `course site` writes build/site/ (git-ignored).

Every page is nbconvert's HTML export with its JupyterLab ("lab") template, extended by
site/templates/course/ with navigation and a "run it" box: the pages look like the notebooks in
JupyterLab, from their committed outputs (nothing is executed). Every asset is local, so the site
builds and reads offline: the stylesheets are inlined by nbconvert, plots are stored as data URIs,
and mermaid's JavaScript is vendored: its standalone bundle is taken once from the npm tarball
pinned in site/mermaid.json, checked against the pinned integrity hash (no npm or Node.js needed).
The home page is a notebook made here from course.toml and converted like the others.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import tarfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from coursekit.manifest import MANIFEST_NAME, CourseError, Lesson, course_root, lessons

SITE_OUTPUT = Path("build") / "site"
MARKER = ".course-site"  # in every folder `course site` wrote: only such a folder is ever replaced
MERMAID_PIN = Path("site") / "mermaid.json"
MERMAID_TARBALL_MAX = 64 * 1024 * 1024  # the 11.10.0 tarball is 14 MB: anything far larger is not it
# nbconvert imports mermaid as an ES module from this URL; the page loads the vendored classic
# script first (it sets globalThis.mermaid), which also works from file:// where module imports don't.
MERMAID_MODULE = "data:text/javascript,export default globalThis.mermaid;"
SHARED_CSS = ("index.css", "theme-light.css")  # nbconvert's lab template's static/, linked, not inlined
KINDS = (("notebooks", "lesson"), ("exercises", "exercise"), ("solutions", "solution"))
NOTEBOOK_LINK = re.compile(r"(\]\((?!https?:)[^)\s]*?)\.ipynb([#)])")


@dataclass
class Link:
    href: str
    label: str


@dataclass
class Page:
    """One page of the site: where it comes from and goes, and what the template shows."""
    source: Path | None  # None: the home page
    output: str  # relative to the site folder, e.g. "notebooks/01_x.html"
    label: str  # in the previous/next links
    title: str  # the browser tab's
    run: dict | None = None
    previous: Link | None = None
    next: Link | None = None

    @property
    def to_root(self) -> str:
        return "../" * self.output.count("/")


@dataclass
class SiteReport:
    folder: Path
    pages: list[Page] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())


def repository_url(root: Path) -> str:
    """[site] repository in course.toml: a GitHub URL turns on the Binder links ("" leaves them off)."""
    data = tomllib.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    url = str(data.get("site", {}).get("repository", "")).strip().rstrip("/")
    if url and not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise CourseError(f"{MANIFEST_NAME}: [site] repository must be https://github.com/OWNER/REPO (or empty), not {url!r}")
    return url.removesuffix(".git")


def binder_link(repository: str, notebook: str) -> str | None:
    if not repository:
        return None
    owner_repo = repository.removeprefix("https://github.com/")
    return f"https://mybinder.org/v2/gh/{owner_repo}/HEAD?labpath={notebook}"


def html_links(markdown: str) -> str:
    """Relative links to notebooks point at their pages: ../exercises/01_x.ipynb -> ../exercises/01_x.html."""
    return NOTEBOOK_LINK.sub(r"\1.html\2", markdown)


def _mermaid_pin(root: Path) -> dict:
    try:
        return json.loads((root / MERMAID_PIN).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CourseError(f"{MERMAID_PIN} (the pinned mermaid the site vendors) is missing or unreadable: {exc}") from exc


def mermaid_js(root: Path) -> Path:
    """Where the vendored bundle lives (git-ignored): site/vendor/mermaid-<version>.min.js."""
    return root / "site" / "vendor" / f"mermaid-{_mermaid_pin(root)['version']}.min.js"


def vendored_mermaid(root: Path) -> Path:
    """mermaid's standalone bundle at the pinned version, fetched once from its npm tarball.

    One 14 MB download instead of `npm ci` (140 packages, 131 MB, and Node.js): dist/mermaid.min.js
    is self-contained. The tarball must match the npm integrity hash pinned in site/mermaid.json.
    """
    pin = _mermaid_pin(root)
    target = mermaid_js(root)
    if target.is_file():
        return target
    print(f"fetching mermaid {pin['version']} once from {pin['tarball']} ...", flush=True)
    try:
        with urllib.request.urlopen(pin["tarball"], timeout=60) as response:
            tarball = response.read(MERMAID_TARBALL_MAX + 1)
    except OSError as exc:  # URLError, timeouts, refused connections
        raise CourseError(f"could not fetch mermaid for the site ({pin['tarball']}): {exc}; "
                          "the site needs it once, then builds offline") from exc
    if len(tarball) > MERMAID_TARBALL_MAX:
        raise CourseError(f"{pin['tarball']} is larger than {MERMAID_TARBALL_MAX} bytes: not the pinned tarball")
    algorithm, _, expected = pin["integrity"].partition("-")
    got = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if got != expected:
        raise CourseError(f"{pin['tarball']} does not match the integrity hash pinned in {MERMAID_PIN}: "
                          "refusing to vendor it")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.getmember(pin["file"])
        bundle = archive.extractfile(member).read()  # read into memory: nothing of the archive touches the disk
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(bundle)
    partial.replace(target)  # a build interrupted mid-write never leaves a truncated bundle behind
    return target


def plan(root: Path) -> list[Page]:
    """The pages in reading order: home, then for each lesson its lesson, exercise and solution."""
    repository = repository_url(root)
    pages = [Page(None, "index.html", "Course map", "FastAPI Advanced Patterns: the course map")]
    for lesson in lessons(root):
        for folder, kind in KINDS:
            notebook = f"{folder}/{lesson.stem}.ipynb"
            related = [Link(f"../{other}/{lesson.stem}.html", other_kind) for other, other_kind in KINDS if other != folder]
            then = f"open <code>{notebook}</code>"
            if kind == "exercise":
                then += f" (or check it from a terminal: <code>course check {lesson.id}</code>)"
            run = {"command": "python3 start.py", "then": then, "binder": binder_link(repository, notebook),
                   "related": related}
            pages.append(Page(root / notebook, f"{folder}/{lesson.stem}.html", f"{lesson.id} {kind}",
                              f"{lesson.id} · {lesson.title} ({kind}) · FastAPI Advanced Patterns", run))
    for before, after in zip(pages, pages[1:]):
        before.next = Link(_relative(before.output, after.output), after.label)
        after.previous = Link(_relative(after.output, before.output), before.label)
    return pages


def _relative(from_page: str, to_page: str) -> str:
    return "../" * from_page.count("/") + to_page


def home_notebook(all_lessons: tuple[Lesson, ...]):
    import nbformat

    rows = ["| # | lesson | what you learn | exercise | solution |", "|---|---|---|---|---|"]
    for lesson in all_lessons:
        rows.append(f"| {lesson.id} | [{lesson.title}](notebooks/{lesson.stem}.html) | {lesson.summary} "
                    f"| [exercise](exercises/{lesson.stem}.html) | [solution](solutions/{lesson.stem}.html) |")
    text = "\n".join([
        "# FastAPI Advanced Patterns",
        "",
        "An executable notebook course for developers who write basic FastAPI apps and now need the patterns "
        "production APIs rely on. Every lesson runs its claims; each has an exercise with checks and a worked "
        "solution. These pages show the notebooks with the outputs CI verified.",
        "",
        "**Run it yourself**: `python3 start.py` in the course folder sets up the pinned environment and opens "
        "JupyterLab on lesson 00 (Python 3.11+, nothing else to install).",
        "",
        "## Course map",
        "",
        *rows,
    ])
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_markdown_cell(text))
    return notebook


def _shared_stylesheets(exporter, static: Path):
    """A filter: nbconvert inlines JupyterLab's stylesheets (about 250 KB) into every page; the site
    links one copy of each from _static/ instead, so that a reader's browser caches it."""
    env = exporter.environment
    shared = {}
    for name in SHARED_CSS:
        text = env.loader.get_source(env, f"static/{name}")[0]
        (static / name).write_text(text, encoding="utf-8")
        shared[name] = f'<style type="text/css">\n{text}</style>'  # as nbconvert's resources.include_css writes it

    def link(html: str, to_root: str) -> str:
        for name, inline in shared.items():
            if inline not in html:
                raise CourseError(f"nbconvert no longer inlines static/{name} as expected: update coursekit/site.py")
            html = html.replace(inline, f'<link rel="stylesheet" href="{to_root}_static/{name}">')
        return html

    return link


NO_ALT = "No description has been provided for this image"  # nbconvert's own wording
_IMG_WITHOUT_ALT = re.compile(r"<img\b(?![^>]*\salt=)([^>]*?)(\s*/?>)")
_FOCUSABLE_DIV = re.compile(r'<div class="([^"]*\b(?:jp-Cell-inputWrapper|jp-OutputArea-output)\b[^"]*)"([^>]*)>')


def site_exporter_class():
    from nbconvert import HTMLExporter
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class SiteExporter(HTMLExporter):
        """HTMLExporter without its last step: parsing each whole page with BeautifulSoup's pure-Python
        parser and writing it out again, to give images an alt text and cells a tabindex (about 60% of
        the build's CPU). The same two edits are made on the template's own tags instead; a test
        checks that the pages read the same to BeautifulSoup (tests/test_site.py)."""

        def from_notebook_node(self, nb, resources=None, **kw):
            # HTMLExporter.from_notebook_node (nbconvert 7.17) up to its BeautifulSoup pass
            langinfo = nb.metadata.get("language_info", {})
            lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
            highlight_code = self.filters.get("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
            resources = self._init_resources(resources)
            filter_data_type = WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources)
            self.register_filter("highlight_code", highlight_code)
            self.register_filter("filter_data_type", filter_data_type)
            html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            return accessible(html), resources

    return SiteExporter


def accessible(html: str) -> str:
    """nbconvert's two accessibility edits: an alt text on every image without one, and a tabindex
    on each cell's input and output, so a keyboard reaches them."""
    html = _IMG_WITHOUT_ALT.sub(lambda m: f'<img{m.group(1)} alt="{NO_ALT}"{m.group(2)}', html)
    return _FOCUSABLE_DIV.sub(lambda m: f'<div class="{m.group(1)}"{m.group(2)} tabindex="0">', html)


def build_site(root: Path | None = None, output: Path | None = None) -> SiteReport:
    """Write the whole site into output (default build/site/ in the course), replacing an older build."""
    import nbformat

    started = time.perf_counter()
    root = (root or course_root()).resolve()
    output = (output or root / SITE_OUTPUT).resolve()
    if output.exists():
        if not (output / MARKER).is_file() and any(output.iterdir()):
            raise CourseError(f"{output} exists and was not written by `course site`: choose an empty or new folder")
        shutil.rmtree(output)
    mermaid = vendored_mermaid(root)
    (output / "_static").mkdir(parents=True)
    (output / MARKER).write_text("written by `course site`; the next build replaces this folder\n", encoding="utf-8")
    shutil.copy2(mermaid, output / "_static" / "mermaid.min.js")
    shutil.copy2(root / "site" / "static" / "course.css", output / "_static" / "course.css")

    # optimistic_validation: nbconvert validates the notebook once, after its preprocessors, not after each one
    # (about ten per page, most of them disabled); a preprocessor that broke it is still caught
    exporter = site_exporter_class()(template_name="course", extra_template_basedirs=[str(root / "site" / "templates")],
                            mermaid_js_url=MERMAID_MODULE, mermaid_layout_elk_js_url="", optimistic_validation=True)
    exporter.register_filter("shared_stylesheets", _shared_stylesheets(exporter, output / "_static"))
    pages = plan(root)
    all_lessons = lessons(root)
    for page in pages:
        notebook = home_notebook(all_lessons) if page.source is None else nbformat.read(page.source, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = html_links(cell.source)
        has_mermaid = any(c.cell_type == "markdown" and "```mermaid" in c.source for c in notebook.cells)
        site = {"to_root": page.to_root, "previous": page.previous, "next": page.next, "run": page.run,
                "has_mermaid": has_mermaid}
        body, _ = exporter.from_notebook_node(notebook, resources={"site": site, "metadata": {"name": page.title}})
        target = output / page.output
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    return SiteReport(output, pages, time.perf_counter() - started)


def uncommitted_notebooks(root: Path) -> list[str]:
    """Notebooks of the course folder that differ from its last commit (a learner's attempt, an
    author's unrecorded edit): the site shows the files as they are on disk, these included."""
    import subprocess

    try:
        done = subprocess.run(["git", "status", "--porcelain", "-z", "--untracked-files=all", "--", "notebooks", "exercises", "solutions"],
                              cwd=root, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []  # not a git checkout: nothing to compare with
    entries = [e.decode(errors="replace") for e in done.stdout.split(b"\0") if e]
    return sorted(e[3:] for e in entries if len(e) > 3 and e[3:].endswith(".ipynb"))


def main(output: str | None = None) -> int:  # `course site`
    from coursekit.manifest import course_root

    report = build_site(output=Path(output) if output else None)
    print(f"wrote {len(report.pages)} pages to {report.folder} ({report.size_bytes / 1e6:.1f} MB, "
          f"{report.seconds:.1f} s)")
    if changed := uncommitted_notebooks(course_root()):
        print(f"note: {len(changed)} page(s) show notebooks not committed (publish from a clean checkout): "
              + ", ".join(changed))
    print(f"read it offline: python3 -m http.server --directory {report.folder} 8000, then open http://127.0.0.1:8000/")
    return 0
