"""One place for versions: requirements.txt. pip and conda install the same set."""

import re
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.markers import Marker

from tests.conftest import ROOT

PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)(?:\[[a-z0-9,_-]+\])?==(?P<version>[A-Za-z0-9.+!-]+)"
    r"(?:\s*;\s*(?P<marker>.+))?$"  # an environment marker: uvloop is not built for Windows
)


def pins() -> dict[str, str]:
    """Pinned name -> version, for the pins that apply to this machine (their marker holds)."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"requirements.txt: {line!r} is not an exact `name==version` pin"
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        assert name not in found, f"{name} is pinned twice"
        if match["marker"] is None or Marker(match["marker"]).evaluate():
            found[name] = match["version"]
    return found


def test_every_requirement_is_pinned_exactly_once():
    assert {"fastapi", "sqlmodel", "httpx", "nbval", "ipytest", "jupyterlab", "pyjwt", "pwdlib"} <= set(pins())


def test_the_running_environment_is_the_pinned_one():
    wrong = {}
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"installed versions differ from requirements.txt (pinned, installed): {wrong}"


def test_environment_yml_installs_requirements_txt_and_pins_nothing_else():
    text = (ROOT / "environment.yml").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    deps = [l[2:] for l in lines if l.startswith("- ")]
    assert "-r requirements.txt" in deps and "-e ." in deps
    conda_packages = [d for d in deps if d not in ("-r requirements.txt", "-e .", "pip", "conda-forge") and not d.endswith(":")]
    assert conda_packages == ["python=3.11"], f"only python comes from conda; versions live in requirements.txt: {conda_packages}"
    pip_block = text.split("- pip:")[1]
    assert not re.search(r"==|>=|<=", pip_block), "environment.yml must not pin versions of its own"


@pytest.mark.parametrize("name", ["python-jose", "jose"])
def test_no_known_vulnerable_jwt_library_is_installed(name):
    with pytest.raises(PackageNotFoundError):
        version(name)
