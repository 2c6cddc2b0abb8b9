"""The course's invariants: manifest and folders agree, notebooks are clean.
The slow ones (each notebook executed) are nbval itself, the second Run All it is followed by
(run_all_again.py) and the corpora (tests/corpus/, each with its exercise's stub run)."""

import json
from pathlib import Path

import pytest

from coursekit.manifest import FOLDERS, lessons
from coursekit.build import COLLAPSED_INPUT
from coursekit.hunt import generated_files, is_hunt
from coursekit.runner import _is_check_cell, notebook_check_ids, read_notebook
from tests.conftest import ROOT

LESSONS = lessons(ROOT)
IDS = [lesson.stem for lesson in LESSONS]


def test_manifest_and_the_three_folders_agree():
    stems = [lesson.stem for lesson in LESSONS]
    assert stems, "course.toml lists no lessons"
    assert [lesson.id for lesson in LESSONS] == sorted({lesson.id for lesson in LESSONS}), "ids must be unique and in order"
    assert len({lesson.slug for lesson in LESSONS}) == len(LESSONS), "slugs must be unique"
    assert LESSONS[0].stem == "00_start_here"
    for folder in FOLDERS:
        found = sorted(path.stem for path in (ROOT / folder).glob("*.ipynb"))
        assert found == sorted(stems), f"{folder}/ holds {found}, course.toml lists {stems}"


@pytest.mark.parametrize("lesson", LESSONS, ids=IDS)
def test_every_exercise_has_checks_with_teaching_messages(lesson):
    ids = notebook_check_ids(read_notebook(lesson.solution))
    assert ids, f"{lesson.solution.name} has no %%ipytest check cell"
    assert len(ids) == len(set(ids)), f"duplicate check names in {lesson.solution.name}: {ids}"
    source = "".join("".join(c["source"]) for c in read_notebook(lesson.solution)["cells"] if c["cell_type"] == "code")
    if is_hunt(lesson):  # the learner's work is the service's planted copy, not answer regions (coursekit/hunt.py)
        assert generated_files(lesson), f"{lesson.stem}: an incident hunt generates its copy of the service"
        return
    assert source.count("### BEGIN SOLUTION") >= 1


ALLOWED_NOTEBOOK_METADATA = {"kernelspec", "language_info", "course"}


@pytest.mark.parametrize("folder", FOLDERS)
def test_committed_notebooks_are_clean(folder):
    for path in sorted((ROOT / folder).glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        assert set(notebook["metadata"]) <= ALLOWED_NOTEBOOK_METADATA, f"{path.name}: {sorted(notebook['metadata'])}"
        assert notebook["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        for cell in notebook["cells"]:
            # the one exception: an exercise's check cells open collapsed (coursekit.build), nothing else
            collapsed = folder == "exercises" and _is_check_cell(cell)
            extra = COLLAPSED_INPUT if collapsed else {}
            assert {k: v for k, v in cell["metadata"].items() if k != "tags"} == extra, (
                f"{path.name}: cell metadata {cell['metadata']}" + (f", expected {extra}" if collapsed else "")
            )
        outputs = [o for c in code for o in c["outputs"]]
        if folder == "exercises":
            assert not outputs and all(c["execution_count"] is None for c in code), f"{path.name} has outputs"
        else:
            assert outputs, f"{path.name} has no outputs: run `course record`"
            assert not [o for o in outputs if o["output_type"] == "error"], f"{path.name} stores an error output"
            first_cell = "".join(notebook["cells"][0]["source"])
            assert first_cell.startswith("# "), f"{path.name} should open with a '# NN · Title' cell"
