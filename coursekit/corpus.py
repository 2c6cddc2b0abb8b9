"""Wrong-answer and right-answer corpora: proof that an exercise's checks judge behaviour.

`tests/corpus/<NN_slug>.toml` holds, for one exercise, answers a learner could plausibly write:

    [[wrong]]                      # must make `check` report failed, with a message
    id = "create_never_stores"
    concept = "201 Created means the resource exists: a later GET must find it"
    check = "test_created_order_can_be_read"
    message = "404"                # optional: a substring the failure message must contain
    [wrong.regions]
    add_create_order = '''...'''   # replaces the answer region inside `def add_create_order`

    [[right]]                      # must pass every check
    id = "..."
    why = "..."
    [right.regions]
    ...

A region is named by the function (or class) whose body holds it (`name#2` for its second region). Its
code is written unindented; it is indented like the region it replaces.

An incident hunt (coursekit/hunt.py: the learner fixes a generated copy of a service, not regions) has
entries that patch that copy instead: `incident` names the planted bug the entry starts from (only that
one is planted; every other file is the real service), `[[wrong.patch]]` / `[[right.patch]]` the learner's
edit (file relative to the package, find, replace: find must be in the planted file exactly once):

    [[wrong]]
    id = "bigger_pool_instead_of_closing"
    concept = "a leaked session still leaks with a bigger pool: it only takes longer to run out"
    check = "test_sessions_go_back_to_the_pool"
    incident = "sessions_leak_on_errors"
    [[wrong.patch]]
    file = "settings.py"
    find = "db_pool_size: int = 5"
    replace = "db_pool_size: int = 50"

The harness writes that copy to a folder of its own, points $COURSE_HUNT_SERVICE at it, and re-runs
the notebook from the cell calling `service_under_test(` (which imports the package afresh).

One kernel per exercise (in the suite it first runs the generated exercise, as `course check` would:
tests/test_exercise_stubs.py judges that report): the solution notebook runs once; each entry then re-executes the cells
holding its regions (entry code in place) and every following cell up to the last check cell,
with only the named check for a wrong answer (check cells above the replaced regions run after
them). A wrong answer whose check comes after its regions stops at the cell holding that check:
cells after it cannot change what the check reported. The original cells are re-executed lazily,
before an entry that needs them (see CorpusRun._stale_from).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from coursekit.build import BEGIN, END
from coursekit.checks import PLAIN_ASSERTS_ENV, REPORT_ENV
from coursekit.manifest import CourseError, Lesson, lessons
from coursekit.runner import _first_error, _is_check_cell, _source, check_ids, notebook_check_ids, read_notebook

CORPUS_DIR = Path("tests") / "corpus"
NO_MESSAGE = "an assert failed (it has no message)"
DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?(?:def|class)[ \t]+(?P<name>\w+)")


@dataclass
class Entry:
    kind: str  # "wrong" | "right"
    id: str
    regions: dict[str, str]
    reason: str  # concept (wrong) or why (right)
    check: str = ""  # wrong only
    message: str = ""  # wrong only, optional
    incidents: list[str] = field(default_factory=list)  # an incident hunt: the planted bugs it starts from
    patches: list = field(default_factory=list)  # an incident hunt: coursekit.hunt.Change, the learner's edit


@dataclass
class EntryResult:
    entry: Entry
    ok: bool
    summary: str  # one line: what the checks said, or why the entry did not hold
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (status, message)
    seconds: float = 0.0


def corpus_path(lesson: Lesson, root: Path) -> Path:
    return root / CORPUS_DIR / f"{lesson.stem}.toml"


def load(path: Path) -> list[Entry]:
    """The entries of one corpus file; CourseError naming the entry for anything malformed."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CourseError(f"{path}: not a readable corpus ({exc})") from None
    unknown = set(data) - {"wrong", "right"}
    if unknown:
        raise CourseError(f"{path}: unknown top-level keys {sorted(unknown)} (only [[wrong]] and [[right]])")
    entries: list[Entry] = []
    for kind, reason_key, allowed in (
        ("wrong", "concept", {"id", "concept", "check", "message", "regions", "incident", "patch"}),
        ("right", "why", {"id", "why", "regions", "incident", "patch"}),
    ):
        for number, raw in enumerate(data.get(kind, []), start=1):
            where = f"{path.name}: [[{kind}]] #{number} ({raw.get('id', 'no id')})"
            extra = set(raw) - allowed
            if extra:
                raise CourseError(f"{where}: unknown keys {sorted(extra)}")
            regions = raw.get("regions")
            patches = _patches(raw, where)
            if not raw.get("id") or not raw.get(reason_key):
                raise CourseError(f"{where}: needs id and {reason_key}")
            if patches and regions is not None:
                raise CourseError(f"{where}: an entry replaces [regions] or patches an incident hunt's copy, not both")
            if not patches and (not isinstance(regions, dict) or not regions):
                raise CourseError(f"{where}: needs a non-empty [regions] table (or, in an incident hunt, "
                                  "incident = ... and [[patch]] tables)")
            if kind == "wrong" and not raw.get("check"):
                raise CourseError(f"{where}: a wrong answer names the check that must catch it (check = ...)")
            entries.append(
                Entry(kind, raw["id"], {k: str(v) for k, v in (regions or {}).items()}, raw[reason_key],
                      raw.get("check", ""), raw.get("message", ""),
                      [raw["incident"]] if patches else [], patches)
            )
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CourseError(f"{path.name}: entry ids used twice: {duplicates}")
    return entries


def _patches(raw: dict, where: str) -> list:
    """An incident-hunt entry's patches (coursekit.hunt.Change), validated; [] for a regions entry."""
    from coursekit.hunt import Change

    if "patch" not in raw and "incident" not in raw:
        return []
    if not isinstance(raw.get("incident"), str) or not raw["incident"]:
        raise CourseError(f"{where}: a patch entry names the incident it starts from (incident = ...)")
    patches = raw.get("patch")
    if not isinstance(patches, list) or not patches:
        raise CourseError(f"{where}: a patch entry needs [[{'wrong' if 'concept' in raw else 'right'}.patch]] tables")
    out = []
    for number, patch in enumerate(patches, start=1):
        if not isinstance(patch, dict) or set(patch) != {"file", "find", "replace"} or not all(
                isinstance(v, str) for v in patch.values()) or not patch["find"]:
            raise CourseError(f"{where}: patch #{number} needs exactly file, find (not empty) and replace, as strings")
        out.append(Change(patch["file"], patch["find"], patch["replace"]))
    return out


def regions_of(notebook: dict) -> dict[str, tuple[int, int, int, str]]:
    """Every answer region: name -> (cell index, first line, last line (markers included), indent)."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for index, cell in enumerate(notebook["cells"]):
        if cell.get("cell_type") != "code":
            continue
        lines = _source(cell).splitlines()
        start = None
        for number, line in enumerate(lines):
            if begin := BEGIN.match(line):
                start, indent = number, begin.group("indent")
            elif END.match(line) and start is not None:
                owner = _enclosing_function(lines, start, indent)
                name, ordinal = owner, 2
                while name in found:
                    name, ordinal = f"{owner}#{ordinal}", ordinal + 1
                found[name] = (index, start, number, indent)
                start = None
    return found


def _enclosing_function(lines: list[str], start: int, indent: str) -> str:
    for line in reversed(lines[:start]):
        match = DEF.match(line)
        if match and len(match.group("indent")) < len(indent):
            return match.group("name")
    return "<cell>"


def replaced_cells(notebook: dict, regions: dict[str, str]) -> dict[int, str]:
    """Cell index -> new source, with each named region's body replaced by the entry's code."""
    known = regions_of(notebook)
    missing = sorted(set(regions) - set(known))
    if missing:
        raise CourseError(f"no answer region named {missing}; the solution's regions are {sorted(known)}")
    edits: dict[int, list[tuple[int, int, str, str]]] = {}
    for name, code in regions.items():
        index, first, last, indent = known[name]
        edits.setdefault(index, []).append((first, last, indent, code))
    sources: dict[int, str] = {}
    for index, cell_edits in edits.items():
        lines = _source(notebook["cells"][index]).splitlines()
        for first, last, indent, code in sorted(cell_edits, reverse=True):  # bottom-up keeps line numbers
            body = textwrap.indent(textwrap.dedent(code).strip("\n"), indent, lambda line: True).splitlines()
            lines[first + 1 : last] = body
        sources[index] = "\n".join(lines)
    return sources


def only_check(cell_source: str, check_id: str) -> str:
    """A check cell that runs only `check_id` (pytest -k on the %%ipytest line)."""
    first, _, rest = cell_source.lstrip().partition("\n")
    return f"{first} -k {check_id}\n{rest}"


def _code_cell(source: str):
    """nbformat.v4.new_code_cell without its JSON-schema validation (a few ms per cell, thousands of
    cells per corpus): a code cell made of a str source is valid."""
    from nbformat import NotebookNode

    return NotebookNode(cell_type="code", metadata=NotebookNode(), execution_count=None, source=source, outputs=[])


# The kernel's options. Tracebacks in IPython's Minimal mode (the exception's type and message, no
# frames): a wrong answer's check cell raises (ipytest's raise_on_error), and the default mode renders
# every frame with its source highlighted by pygments, twice (shown and stored): 30-40 ms of the
# kernel's CPU per wrong answer, about a tenth of its cost, for text no judge reads (they read the
# checks' report, and a cell's error as its type and message: `_first_error`).
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR", "--HistoryManager.hist_file=:memory:",
                    "--InteractiveShell.xmode=Minimal")

def compile_each_source_once() -> None:
    """(Run inside the corpus kernel, by CorpusRun, before the solution.) IPython's work on a cell's
    TEXT is done once per distinct text; the code still runs every time.

    The kernel runs the same cells hundreds of times (each entry re-runs its cells and its check
    cell, and %%ipytest runs a check cell's body as a second cell). Before any code runs, IPython
    tokenizes the text for its transforms, hashes it for the cell's file name (ipykernel's
    pure-Python murmur2), compiles it once to see whether it needs top-level await, parses it and
    compiles each statement: about 45 ms of CPU per run of a 30 kB check cell. Each of these is a
    function of the text alone (and the compiler's flags, which are part of the key), so its result
    is kept: the same text gives the same code objects, which run again as a module's code would.
    The file names (tracebacks, checks.py's `_where_in_notebook`) are the ones ipykernel gives.
    """
    import ast
    import codeop
    import functools

    import ipykernel.compiler
    from IPython import get_ipython
    from IPython.core import interactiveshell

    shell = get_ipython()
    manager = shell.input_transformer_manager
    manager.transform_cell = functools.lru_cache(maxsize=None)(manager.transform_cell)
    ipykernel.compiler.murmur2_x86 = functools.lru_cache(maxsize=None)(ipykernel.compiler.murmur2_x86)
    interactiveshell._should_be_async = functools.lru_cache(maxsize=None)(interactiveshell._should_be_async)

    compiler = shell.compile
    base = type(compiler)
    trees: dict[tuple, ast.Module] = {}
    codes: dict[tuple, tuple[ast.AST, object]] = {}  # the statement is kept with its code: its id stays its own

    class CompileOnce(base):
        def ast_parse(self, source, filename="<unknown>", symbol="exec"):
            if shell.ast_transformers:  # they may rewrite the tree: parse afresh
                return super().ast_parse(source, filename, symbol)
            key = (source, filename, symbol, self.flags)
            if key not in trees:
                trees[key] = super().ast_parse(source, filename, symbol)
            tree = trees[key]
            # a new module of the same statements (compiling never changes them)
            return ast.Module(body=list(tree.body), type_ignores=tree.type_ignores)

        def __call__(self, source, filename, symbol, **kwargs):
            body = getattr(source, "body", None)
            if kwargs or not isinstance(body, list) or len(body) != 1:
                return super().__call__(source, filename, symbol, **kwargs)
            key = (id(body[0]), type(source), filename, symbol, self.flags)
            cached = codes.get(key)
            if cached is not None and cached[0] is body[0]:
                return cached[1]
            code = super().__call__(source, filename, symbol)
            if not any(code.co_flags & feature.compiler_flag for feature in codeop._features):
                codes[key] = (body[0], code)  # (a __future__ import also changes the flags: compiled each time)
            return code

    compiler.__class__ = CompileOnce


TIMED_OUT = "the cell did not finish: timed out or the kernel died"
EXERCISE_TIMEOUT = 600  # a whole Run All of the exercise, as `course check` allows it
SERVICE_CALL = "service_under_test("  # the incident hunt's cell that picks (and imports) the service under test


class CorpusRun:
    """One kernel that has run a solution notebook, ready to try entries against its checks."""

    def __init__(self, solution: Path, *, cell_timeout: float = 120, lesson: Lesson | None = None,
                 exercise: Path | None = None) -> None:
        self.solution = Path(solution)
        # The generated exercise, run first in the fresh kernel (see _check_exercise); its Report here.
        self.exercise = Path(exercise) if exercise is not None else None
        self.exercise_report = None
        self.lesson = lesson  # needed for an incident hunt's patch entries (its incidents file)
        self._copies = 0
        self.notebook = read_notebook(self.solution)
        self.cell_timeout = cell_timeout
        cells = self.notebook["cells"]
        self.check_cells = [i for i, cell in enumerate(cells) if _is_check_cell(cell)]
        if not self.check_cells:
            raise CourseError(f"{solution}: has no check cells")
        self.last_check = self.check_cells[-1]
        self.check_ids = notebook_check_ids(self.notebook)
        # each check cell's checks, parsed once (not once per entry: a check cell is a large parse)
        self._checks_in = {i: check_ids(_source(cells[i]).lstrip()) for i in self.check_cells}
        self._tmp = tempfile.TemporaryDirectory(prefix="course-corpus-")
        self.report = Path(self._tmp.name) / "checks.jsonl"
        self._client = None
        self._kernel = None
        # Cells from this index to the last check may have run with an entry's code: the kernel holds
        # that entry's definitions until they run again. Restored lazily: the next entry re-runs the
        # cells from its own first region on, so only the cells above that need restoring. A wrong
        # answer that stopped at its check cell leaves the cells below it as they were (the solution's,
        # or an earlier entry's, still marked stale from here): the next entry re-runs them, or they
        # cannot reach its check, which runs before them; __exit__ restores whatever is left.
        self._stale_from: int | None = None
        self._stale_after = ""  # the entry that left them
        self._judged: dict[str, EntryResult] = {}  # right answers judged in a group (see judge)

    def __enter__(self) -> CorpusRun:
        self._start()
        return self

    def _start(self) -> None:
        import nbformat
        from nbclient import NotebookClient

        from coursekit.kernels import AsyncUnixSocketKernelManager

        self._stale_from, self._stale_after = None, ""
        self._nb = nbformat.reads(json.dumps(self.notebook), as_version=4)
        self._client = NotebookClient(
            self._nb, timeout=self.cell_timeout, allow_errors=True, interrupt_on_timeout=True,
            kernel_manager_class=AsyncUnixSocketKernelManager,  # no TCP ports to race for (coursekit/kernels.py)
            record_timing=False, extra_arguments=[*KERNEL_ARGUMENTS],
            resources={"metadata": {"path": str(self.solution.parent.resolve())}},
        )
        # PLAIN_ASSERTS_ENV: no assert rewriting in this kernel (see setup_checks): every entry's verdict
        # and check status were identical without it (all 751 entries, measured). Only introspection of a
        # bare assert is lost: exercise 09 quotes a learner's failing test as "AssertionError", not
        # "AssertionError: assert 201 == 409" as a learner sees it; a `message` must not rely on it.
        env = {**os.environ, REPORT_ENV: str(self.report), "PYDEVD_DISABLE_FILE_VALIDATION": "1",
               PLAIN_ASSERTS_ENV: "1"}
        self._kernel = self._client.setup_kernel(env=env)
        self._kernel.__enter__()
        setup = _code_cell(f"__import__({__name__!r}, fromlist=['_']).compile_each_source_once()")  # no name left behind
        self._client.execute_cell(setup, 0)
        if problem := _first_error(setup):
            self.__exit__(None, None, None)
            raise CourseError(f"the corpus kernel could not be set up: {problem}")
        if self.exercise is not None and self.exercise_report is None:
            try:
                self._check_exercise()
            except BaseException:
                self._kernel.__exit__(None, None, None)
                self._kernel = None
                raise
        errors = self._run(range(0, self.last_check + 1), {}, skip_checks=True)
        if errors:
            self.__exit__(None, None, None)
            raise CourseError(f"{self.solution}: the solution itself fails before its checks: {errors[0]}")

    def _check_exercise(self) -> None:
        """Run All of the generated exercise, as `course check` runs it (coursekit.runner.run_cells and
        report_of), in this kernel while it is fresh: nothing has run in it but compile_each_source_once.
        The exercise runs in its own folder; the solution then runs in the same kernel, as a second
        Run All would, and the entries after it. One kernel start and the imports of the exercise's
        stack serve both (tests/test_exercise_stubs.py judges the report)."""
        import nbformat

        from coursekit.runner import expected_checks, report_of, run_cells

        notebook = read_notebook(self.exercise)
        expected = expected_checks(self.exercise, notebook, self.lesson)
        present = set(notebook_check_ids(notebook))
        self._chdir(self.exercise.parent.resolve())
        try:
            run = run_cells(self._client, nbformat.reads(json.dumps(notebook), as_version=4), self.report,
                            cell_timeout=self.cell_timeout, deadline=time.monotonic() + EXERCISE_TIMEOUT,
                            total_timeout=EXERCISE_TIMEOUT)
        finally:
            self._client.timeout = self.cell_timeout
            self._chdir(self.solution.parent.resolve())
        self.exercise_report = report_of(self.exercise, run, expected, present)

    def _chdir(self, folder: Path) -> None:
        cell = _code_cell(f"import os as _os; _os.chdir({str(folder)!r}); del _os")
        self._client.execute_cell(cell, 0)
        if problem := _first_error(cell):
            raise CourseError(f"the corpus kernel could not change to {folder}: {problem}")

    def _fresh_kernel(self) -> None:
        """Replace the kernel by a new one that has run the solution again.

        After a cell timed out, the kernel may hold what earlier entries left (a thread still
        blocked, an executor used up, ipytest interrupted mid-run): it can no longer judge anything
        fairly. A learner's kernel never holds dozens of wrong answers' leftovers either.
        """
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            kernel.__exit__(None, None, None)  # its embedded database, if any, is reaped as an orphan
        self._start()

    def __exit__(self, *exc_info: object) -> None:
        if self._kernel is not None:
            try:
                self._restore(len(self.notebook["cells"]))
                # cells after the last check (stop a database, ...) run once, at the end
                self._run(range(self.last_check + 1, len(self.notebook["cells"])), {}, skip_checks=True)
            finally:
                self._kernel.__exit__(None, None, None)
                self._kernel = None
        self._tmp.cleanup()

    def _restore(self, before: int) -> None:
        """Run the solution's own code again in the stale cells above `before` (the caller re-runs the rest)."""
        stale, self._stale_from = self._stale_from, None
        if stale is None or stale >= before:
            return
        errors = self._run(range(stale, min(before, self.last_check + 1)), {}, skip_checks=True)
        if errors:
            raise CourseError(f"restoring the solution after {self._stale_after!r} failed: {errors[0]}")

    def _cells_holding(self, check_id: str) -> list[int]:
        return [index for index, ids in self._checks_in.items() if check_id in ids]

    def _run_entry(self, entry: Entry, first: int, sources: dict[int, str]) -> list[str]:
        """Run an entry whose first changed cell is `first`: the cells its check(s) need, in Run All order."""
        if entry.kind == "wrong":
            holding = self._cells_holding(entry.check)
            if min(holding) >= first:
                # Its check comes after the changed cells: stop at it. Later cells run after the check
                # in Run All too, so they cannot change the result it has already reported.
                return self._run(range(first, max(holding) + 1), sources, only=entry.check)
            # its check cell comes before the regions: every cell the regions can reach runs first
            errors = self._run(range(first, self.last_check + 1), sources, only=entry.check)
            return errors + self._run(range(0, first), {}, only=entry.check, checks_only=True)
        # a right answer: every check, those in cells above the replaced regions too
        errors = self._run(range(first, self.last_check + 1), sources)
        return errors + self._run(range(0, first), {}, checks_only=True)

    def _run(self, indexes: range, sources: dict[int, str], *, skip_checks: bool = False,
             only: str | None = None, checks_only: bool = False) -> list[str]:
        """Execute cells (with replaced sources); returns one line per cell that raised."""
        errors = []
        for index in indexes:
            original = self.notebook["cells"][index]  # not self._nb: nbclient keeps executed cells there
            if original["cell_type"] != "code":
                continue
            is_check = _is_check_cell(original)
            if (is_check and skip_checks) or (checks_only and not is_check):
                continue
            source = sources.get(index, _source(original))
            if is_check and only is not None:
                if only not in self._checks_in[index]:
                    continue
                source = only_check(source, only)
            cell = _code_cell(source)
            started = time.monotonic()
            try:
                self._client.execute_cell(cell, index)
            except Exception as exc:  # a timeout, a dead kernel: the entry's result says so
                errors.append(f"cell {index + 1}: {type(exc).__name__}: {exc} ({TIMED_OUT})")
                continue
            problem = _first_error(cell)
            if problem and time.monotonic() - started >= self.cell_timeout:  # nbclient interrupted it
                problem += f" ({TIMED_OUT})"
            if problem:  # a check cell raises when a check fails: the judges read the checks first
                errors.append(f"cell {index + 1}: {problem}")
        return errors

    def _recorded(self, offset: int) -> dict[str, tuple[str, str]]:
        if not self.report.exists():
            return {}
        with self.report.open(encoding="utf-8") as handle:
            handle.seek(offset)
            lines = handle.read().splitlines()
        return {r["id"]: (r["status"], r["message"]) for r in map(json.loads, filter(None, lines))}

    def try_entry(self, entry: Entry) -> EntryResult:
        result = self._try_entry(entry)
        if entry.kind == "right" and not result.ok and TIMED_OUT in result.summary:
            # A right answer must pass in a clean kernel, as a learner's runs it: judge it once more
            # in a fresh one (a wrong answer's verdict never gets a second chance: it must fail anyway).
            self._fresh_kernel()
            result = self._try_entry(entry)
        return result

    def _service_cell(self) -> int:
        for index, cell in enumerate(self.notebook["cells"]):
            if cell.get("cell_type") == "code" and SERVICE_CALL in _source(cell):
                return index
        raise CourseError(f"{self.solution.name}: no cell calls {SERVICE_CALL}...): patch entries need one")

    def _patched_copy(self, entry: Entry) -> Path:
        """The service with the entry's incidents planted and its patches applied, in a folder of its own
        (a new one per entry: a module file rewritten in the same second could be read from a stale .pyc)."""
        from coursekit.hunt import incidents_path, load_hunt, planted, write_package

        if self.lesson is None:  # the course the solution belongs to: the folder above solutions/
            from coursekit.manifest import lesson_for_notebook

            self.lesson = lesson_for_notebook(self.solution, self.solution.resolve().parent.parent)
        if self.lesson is None:
            raise CourseError(f"{self.solution}: patch entries need its lesson (its incidents file), and none was found")
        hunt = load_hunt(incidents_path(self.lesson), self.lesson.root)
        files = planted(hunt, only=entry.incidents, extra=entry.patches, who=f"entry {entry.id}")
        self._copies += 1
        folder = Path(self._tmp.name) / f"copy-{self._copies}"
        write_package(files, folder)
        return folder

    def _set_service(self, folder: Path | None) -> None:
        from coursekit.hunt import HUNT_SERVICE_ENV

        code = (f"import os as _os; _os.environ[{HUNT_SERVICE_ENV!r}] = {str(folder)!r}" if folder is not None
                else f"import os as _os; _os.environ.pop({HUNT_SERVICE_ENV!r}, None)")
        self._client.execute_cell(_code_cell(code), 0)

    def _try_entry(self, entry: Entry) -> EntryResult:
        if entry.patches:
            return self._try_patch_entry(entry)
        started = time.monotonic()
        try:
            sources = replaced_cells(self.notebook, entry.regions)
        except CourseError as exc:
            return EntryResult(entry, False, str(exc))
        if entry.kind == "wrong" and entry.check not in self.check_ids:
            return EntryResult(entry, False, f"names check {entry.check!r}, which the solution does not have")
        first = min(sources)
        self._restore(first)  # what an earlier entry left above this one's regions
        offset = self.report.stat().st_size if self.report.exists() else 0
        self._stale_from, self._stale_after = first, entry.id
        errors = self._run_entry(entry, first, sources)
        checks = self._recorded(offset)
        seconds = time.monotonic() - started
        ok, summary = (_judge_wrong if entry.kind == "wrong" else _judge_right)(entry, checks, self.check_ids, errors)
        return EntryResult(entry, ok, summary, checks, seconds)

    def _try_patch_entry(self, entry: Entry) -> EntryResult:
        """An incident hunt's entry: the notebook's checks run against a patched copy of the service."""
        started = time.monotonic()
        try:
            first = self._service_cell()
            folder = self._patched_copy(entry)
        except CourseError as exc:
            return EntryResult(entry, False, str(exc))
        if entry.kind == "wrong" and entry.check not in self.check_ids:
            return EntryResult(entry, False, f"names check {entry.check!r}, which the solution does not have")
        self._restore(first)
        offset = self.report.stat().st_size if self.report.exists() else 0
        self._stale_from, self._stale_after = first, entry.id
        self._set_service(folder)
        try:
            errors = self._run_entry(entry, first, {})
        finally:
            self._set_service(None)  # the stale cells run again against the real service
        checks = self._recorded(offset)
        ok, summary = (_judge_wrong if entry.kind == "wrong" else _judge_right)(entry, checks, self.check_ids, errors)
        return EntryResult(entry, ok, summary, checks, time.monotonic() - started)

    def judge(self, entry: Entry, among: list[Entry]) -> EntryResult:
        """One entry's result. A right answer is judged with its group of `right_batches(among)`:
        the first of the group to be asked runs them all, the others get the stored results."""
        if entry.kind == "wrong":
            return self.try_entry(entry)
        if entry.id not in self._judged:
            group = next(g for g in right_batches(among) if entry in g)
            self._judged.update((result.entry.id, result) for result in self.try_together(group))
        return self._judged[entry.id]

    def try_together(self, group: list[Entry]) -> list[EntryResult]:
        """Right answers that replace different regions, judged in one run of every check.

        A right answer's claim is that every check passes with it in place. Answers that replace
        different regions can be in place together: if every check passes, each one's claim holds
        (a correct alternative in one function cannot make a check of another pass). If a check
        fails, each answer is judged again on its own, so the failure is named by its entry.
        """
        if len(group) == 1:
            return [self.try_entry(group[0])]
        regions: dict[str, str] = {}
        for entry in group:
            regions.update(entry.regions)
        together = self.try_entry(Entry("right", " + ".join(e.id for e in group), regions, "judged together",
                                        incidents=[i for e in group for i in e.incidents],
                                        patches=[p for e in group for p in e.patches]))
        if not together.ok:
            return [self.try_entry(entry) for entry in group]
        share = together.seconds / len(group)
        return [
            EntryResult(entry, True, f"{together.summary} (together with {', '.join(o.id for o in group if o is not entry)})",
                        together.checks, share)
            for entry in group
        ]


def right_batches(entries: list[Entry]) -> list[list[Entry]]:
    """The right answers in groups whose members replace different regions (first fit, in order)."""
    batches: list[tuple[set[str], list[Entry]]] = []
    for entry in entries:
        if entry.kind != "right":
            continue
        # an incident hunt's fixes: one per incident in a group (they patch different planted bugs;
        # two fixes of one file are then applied one after the other, each to its own text)
        places = set(entry.regions) | {f"incident:{i}" for i in entry.incidents} | {"kind:" + ("patch" if entry.patches else "regions")}
        for names, group in batches:
            same_kind = ("kind:patch" in names) == bool(entry.patches)
            if same_kind and names.isdisjoint(places - {"kind:patch", "kind:regions"}):
                names.update(places)
                group.append(entry)
                break
        else:
            batches.append((places, [entry]))
    return [group for _, group in batches]


def _judge_wrong(entry: Entry, checks: dict, check_ids: list[str], errors: list[str]) -> tuple[bool, str]:
    if entry.check not in checks:
        why = f" ({errors[0]})" if errors else ""
        return False, f"{entry.check} did not run{why}"
    status, message = checks[entry.check]
    if status == "passed":
        return False, f"{entry.check} PASSED this wrong answer: the check does not see that {entry.reason}"
    if status != "failed":
        return False, f"{entry.check} reported {status}, not failed with a teaching message: {message}"
    if not message or message == NO_MESSAGE:
        return False, f"{entry.check} failed without a message: a learner would not know why"
    if entry.message and entry.message not in message:
        return False, f"{entry.check} failed, but its message does not say {entry.message!r}: {message}"
    return True, f"{entry.check} failed: {message}"


def _judge_right(entry: Entry, checks: dict, check_ids: list[str], errors: list[str]) -> tuple[bool, str]:
    missing = [c for c in check_ids if c not in checks]
    bad = [f"{c} {checks[c][0]}: {checks[c][1]}" for c in check_ids if c in checks and checks[c][0] != "passed"]
    if bad:
        return False, "a correct answer is refused: " + "; ".join(bad)
    if missing or errors:
        why = f" ({errors[0]})" if errors else ""
        return False, f"checks that did not run: {missing}{why}" if missing else f"a cell raised: {errors[0]}"
    return True, f"all {len(check_ids)} checks passed"


def lesson_by_key(key: str, root: Path) -> Lesson:
    for lesson in lessons(root):
        if key in (lesson.id, lesson.stem):
            return lesson
    raise CourseError(f"no lesson {key!r} in course.toml")


def in_run_order(entries: list[Entry], solution: Path) -> list[Entry]:
    """Entries whose regions sit lower in the notebook first: each entry re-runs every cell from its
    first region on, so in this order an entry never needs the cells above it restored."""

    def first_cell(entry: Entry) -> int:
        if not entry.regions or not set(entry.regions) <= set(known):
            return -1  # an entry naming no real region fails on its own, whenever it runs
        return min(known[name][0] for name in entry.regions)

    known = regions_of(read_notebook(solution))  # once per file, not once per entry (collected in every worker)
    return sorted(entries, key=first_cell, reverse=True)


def run_corpus(lesson: Lesson, root: Path, only: list[str] | None = None):
    """Yield an EntryResult per entry of the lesson's corpus (lowest regions first)."""
    path = corpus_path(lesson, root)
    if not path.is_file():
        raise CourseError(f"{path}: no corpus for exercise {lesson.id}")
    entries = in_run_order([e for e in load(path) if not only or e.id in only], lesson.solution)
    with CorpusRun(lesson.solution, lesson=lesson) as run:
        for entry in entries:
            yield run.judge(entry, entries)
