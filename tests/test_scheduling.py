"""conftest.work_order: the order xdist's workers take the units in."""

from conftest import work_order


def units(**sizes):
    return {name.replace("__", "/").replace("_dot_", "."): dict.fromkeys(range(n), False) for name, n in sizes.items()}


def test_corpora_and_notebooks_are_spread_over_the_run_largest_first():
    order = work_order(units(
        tests__corpus__01_dot_toml=70, tests__corpus__09_dot_toml=35,
        notebooks__06_dot_ipynb=50, solutions__06_dot_ipynb=20, notebooks__01_dot_ipynb=30, solutions__01_dot_ipynb=10,
        tests__test_cli_dot_py=15, tests__test_build_dot_py=3,
    ))
    assert sorted(order) == sorted(units(
        tests__corpus__01_dot_toml=1, tests__corpus__09_dot_toml=1, notebooks__06_dot_ipynb=1, solutions__06_dot_ipynb=1,
        notebooks__01_dot_ipynb=1, solutions__01_dot_ipynb=1, tests__test_cli_dot_py=1, tests__test_build_dot_py=1))
    corpora = [order.index(s) for s in ("tests/corpus/01.toml", "tests/corpus/09.toml")]
    notebooks = [order.index(s) for s in ("notebooks/06.ipynb", "notebooks/01.ipynb", "solutions/06.ipynb", "solutions/01.ipynb")]
    assert corpora == sorted(corpora) and notebooks == sorted(notebooks)  # largest first within a kind
    assert corpora[0] < notebooks[2] and corpora[1] > notebooks[1]  # not all the corpora first, nor last
    assert order[-1] in ("solutions/01.ipynb", "tests/test_build.py")  # the run ends on a small unit
