"""Measure what each scheduling unit costs, for the xdist scheduler's ranking (conftest.work_order).

    $PY -m pytest -p tests.measure_units --unit-seconds=tests/unit_seconds.json           # the suite's own run
    $PY -m pytest -n0 -p tests.measure_units --unit-seconds=tests/unit_seconds.json [paths]

Per unit (a file, or an item of conftest.ONE_UNIT_PER_ITEM) it records CPU (this process and its
reaped children: kernels, servers, subprocesses) and wall time, and merges into the file an estimate
of its seconds on a worker of a quiet 2-core CI machine running the suite's workers. In the suite's
own run (xdist workers, an idle machine) that is the unit's wall time there: each worker hands its
figures to the controller in a file beside the target. With -n0 (some units, measured alone) it is
1.5 x CPU + the time it spent waiting (wall - LOAD_STRETCH x CPU, where LOAD_STRETCH is how much
longer CPU work took on the measuring machine; `--load-stretch`, 4 on a machine with load 13-15).
The figures only rank the units; the suite's budget is measured by running it.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--unit-seconds", default=None, help="merge each unit's estimated seconds into this JSON file")
    parser.addoption("--load-stretch", type=float, default=4.0, help="wall / CPU of pure CPU work on this machine now")


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Units:
    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}


_units = _Units()


def _unit(nodeid: str) -> str:
    from conftest import ONE_UNIT_PER_ITEM

    path = nodeid.split("::", 1)[0]
    return nodeid if path in ONE_UNIT_PER_ITEM else path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall, cpu = time.monotonic(), _cpu()
    yield  # a kernel's CPU counts when it is reaped, at its file's last item: whole units are right
    unit = _unit(item.nodeid)
    _units.cpu[unit] = _units.cpu.get(unit, 0.0) + _cpu() - cpu
    _units.wall[unit] = _units.wall.get(unit, 0.0) + time.monotonic() - wall


def _parts(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f"{target.name}.gw*.part"))


def pytest_sessionstart(session):
    target = session.config.getoption("unit_seconds")
    if target and not os.environ.get("PYTEST_XDIST_WORKER"):
        for stale in _parts(Path(target)):  # a worker's figures from a run that did not finish
            stale.unlink()


def pytest_sessionfinish(session):
    target = session.config.getoption("unit_seconds")
    if not target:
        return
    path = Path(target)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # the controller merges once every worker has finished
        Path(f"{target}.{worker}.part").write_text(json.dumps(_units.wall), encoding="utf-8")
        return
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    seconds = data.get("seconds", {})
    parts = _parts(path)
    if parts:  # the suite's own run: what a unit took on its worker, beside the others
        for part in parts:
            seconds.update({unit: round(wall, 1) for unit, wall in json.loads(part.read_text(encoding="utf-8")).items()})
            part.unlink()
        how = f"-n {len(parts)}, the suite's own run: wall seconds per unit"
    elif _units.cpu:
        stretch = session.config.getoption("load_stretch")
        for unit, cpu in _units.cpu.items():
            waiting = max(0.0, _units.wall[unit] - stretch * cpu)
            seconds[unit] = round(1.5 * cpu + waiting, 1)
        how = f"-n0, load stretch {stretch}"
    else:
        return
    data = {"how": __doc__.split("\n\n", 2)[2].strip().replace("\n", " "),
            "measured": f"{time.strftime('%Y-%m-%d')}, {how}", "seconds": dict(sorted(seconds.items()))}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
