"""The README's course map, generated from course.toml (`python -m coursekit.readme` rewrites it)."""

from __future__ import annotations

import sys
from pathlib import Path

from coursekit.manifest import course_root, lessons

START = "<!-- course-map:start (generated from course.toml by `python -m coursekit.readme`) -->"
END = "<!-- course-map:end -->"


def course_map(root: Path | None = None) -> str:
    rows = ["| # | lesson | what you learn | exercise | solution |", "|---|---|---|---|---|"]
    for lesson in lessons(root):
        rows.append(
            f"| {lesson.id} | [{lesson.title}](notebooks/{lesson.stem}.ipynb) | {lesson.summary} "
            f"| [exercise](exercises/{lesson.stem}.ipynb) | [solution](solutions/{lesson.stem}.ipynb) |"
        )
    return "\n".join(rows)


def render(readme: str, root: Path | None = None) -> str:
    """The README text with the block between the markers replaced by the current map."""
    if START not in readme or END not in readme:
        raise ValueError("README.md lacks the course-map markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{course_map(root)}\n{END}{tail}"


def main() -> int:
    path = course_root() / "README.md"
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"updated the course map in {path.name}")
    else:
        print("the course map is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
