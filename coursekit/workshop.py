"""Links for workshops: nbgitpuller on a JupyterHub, and Binder.

nbgitpuller's link (`<server>/git-pull?repo=...`) clones the course into the learner's server on
the first click and pulls it on every later click; `urlpath` is where the learner lands after the
pull. On a JupyterHub the server part is `https://<hub>/hub/user-redirect/`, which sends each
learner to their own server.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

START_NOTEBOOK = "notebooks/00_start_here.ipynb"
DEFAULT_FOLDER = "fastapi-advanced-patterns"


def pull_link(server: str, repo: str, *, branch: str = "main", folder: str = DEFAULT_FOLDER,
              notebook: str = START_NOTEBOOK) -> str:
    """The nbgitpuller link that pulls `repo` into `folder` and opens `notebook` in JupyterLab.

    `server`: `https://<hub>/hub/user-redirect/` on a JupyterHub, or a single Jupyter server's URL.
    """
    query = {"repo": repo, "branch": branch, "targetpath": folder, "urlpath": f"lab/tree/{folder}/{notebook}"}
    return f"{server.rstrip('/')}/git-pull?{urlencode(query, quote_via=quote, safe='')}"


def hub_link(hub: str, repo: str, **options) -> str:
    return pull_link(f"{hub.rstrip('/')}/hub/user-redirect/", repo, **options)


def binder_link(github_repo: str, *, branch: str = "main", notebook: str = START_NOTEBOOK) -> str:
    """mybinder.org builds the image from environment.yml (which installs requirements.txt)."""
    owner_repo = github_repo.removeprefix("https://github.com/").removesuffix(".git").strip("/")
    return f"https://mybinder.org/v2/gh/{owner_repo}/{branch}?urlpath={quote(f'lab/tree/{notebook}', safe='')}"


def binder_badge(github_repo: str, **options) -> str:
    return f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_link(github_repo, **options)})"
