"""conftest.work_order: the order xdist's workers take the units in."""

from conftest import work_order

SIZES = {  # unit -> number of items
    "tests/corpus/01.toml": 70, "tests/corpus/09.toml": 35,
    "notebooks/06.ipynb": 50, "notebooks/01.ipynb": 30, "solutions/06.ipynb": 20, "solutions/01.ipynb": 10,
    "tests/test_cli.py": 15, "tests/test_build.py": 3,
}


def test_corpora_and_notebooks_are_spread_over_the_run_largest_first():
    order = work_order({unit: dict.fromkeys(range(n), False) for unit, n in SIZES.items()})
    assert sorted(order) == sorted(SIZES)
    corpora = [order.index(s) for s in ("tests/corpus/01.toml", "tests/corpus/09.toml")]
    notebooks = [order.index(s) for s in ("notebooks/06.ipynb", "notebooks/01.ipynb", "solutions/06.ipynb", "solutions/01.ipynb")]
    assert corpora == sorted(corpora) and notebooks == sorted(notebooks)  # largest first within a kind
    assert corpora[0] < notebooks[2] and corpora[1] > notebooks[1]  # not all the corpora first, nor last
    assert order[-1] in ("solutions/01.ipynb", "tests/test_build.py")  # the run ends on a small unit
