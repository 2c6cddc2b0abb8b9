"""Print the versions a notebook runs on."""

from importlib.metadata import PackageNotFoundError, version

DEFAULT_PACKAGES = ("fastapi", "starlette", "pydantic", "httpx")


def show_versions(*packages: str) -> None:
    """Print `name version` for each package (the pins of requirements.txt).

    The Python version is left out on purpose: it differs between learners' machines,
    and this cell's output is compared by nbval.
    """
    for name in packages or DEFAULT_PACKAGES:
        try:
            found = version(name)
        except PackageNotFoundError:
            found = "not installed"
        print(f"{name:<18} {found}")
