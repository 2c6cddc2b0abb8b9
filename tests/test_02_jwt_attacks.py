"""Lesson 02's attack table against the SOLUTION's app, as ordinary pytest tests.

The app is the one the solution notebook builds: its code cells are executed in a namespace
(check cells and cells with top-level `await` skipped, `setup_checks()` made a no-op since there
is no IPython here), then `build_app(Settings())` builds it. If the solution changes, these tests
exercise the new code: nothing is copied.

Every bad token must answer 401 with `WWW-Authenticate: Bearer...` (never a 500), a valid
token lacking the scope 403, a valid one 200.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
import coursekit.checks
from coursekit import app_client
from tests.conftest import ROOT

SOLUTION = ROOT / "solutions" / "02_jwt_authentication.ipynb"


def _has_top_level_await(source: str) -> bool:
    code = compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    return bool(code.co_flags & inspect.CO_COROUTINE)


def solution_namespace() -> dict[str, Any]:
    """Run the solution's definition cells; return their globals."""
    notebook = json.loads(SOLUTION.read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "solution_02"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coursekit.checks, "setup_checks", lambda: None)
        for cell in notebook["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or source.lstrip().startswith("%%") or _has_top_level_await(source):
                continue
            exec(compile(source, SOLUTION.name, "exec", dont_inherit=True), namespace)  # no __future__ from here
    return namespace


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    return solution_namespace()


@pytest.fixture(scope="module")
def settings(ns):
    return ns["Settings"]()  # a generated key, as on a development machine


@pytest.fixture
async def client(ns, settings):
    """The solution's app in process; a crash shows up as the 500 a real client gets. Task 1 is alice's."""
    async with app_client(ns["build_app"](settings), raise_app_exceptions=False) as client:
        writer = ns["create_access_token"](settings, "alice", ["tasks:read", "tasks:write"])
        created = await client.post("/tasks", json={"title": "alice's task"}, headers=_bearer(writer))
        assert created.status_code == 201 and created.json()["id"] == 1, created.text
        yield client


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _mint(settings, claims: dict | None = None, *, drop: tuple[str, ...] = (), key: str | None = None,
          algorithm: str = "HS256") -> str:
    now = datetime.now(timezone.utc)
    base = {"sub": "alice", "iat": now, "exp": now + timedelta(minutes=5), "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience, "scope": "tasks:read tasks:write"}
    base.update(claims or {})
    for name in drop:
        base.pop(name)
    return jwt.encode(base, key or settings.jwt_secret.get_secret_value(), algorithm=algorithm)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tampered(settings) -> dict[str, str]:
    header, payload, signature = _mint(settings).split(".")
    claims = jwt.decode(f"{header}.{payload}.{signature}", options={"verify_signature": False})
    return _bearer(f"{header}.{_b64({**claims, 'sub': 'bob'})}.{signature}")


def _alg_none(settings) -> dict[str, str]:
    payload = _mint(settings).split(".")[1]
    return _bearer(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.")


LATER = timedelta(hours=1)
ATTACKS: dict[str, Callable[[Any], dict[str, str]]] = {
    "no Authorization header": lambda s: {},
    "wrong scheme (Basic)": lambda s: {"Authorization": "Basic " + base64.b64encode(b"alice:guess").decode()},
    "empty bearer": lambda s: {"Authorization": "Bearer "},
    "garbage": lambda s: _bearer("not-a-jwt"),
    "alg none": _alg_none,
    "tampered payload": _tampered,
    "wrong key": lambda s: _bearer(_mint(s, key=secrets.token_urlsafe(32))),
    "HS512 with the right key": lambda s: _bearer(_mint(s, algorithm="HS512")),
    "expired": lambda s: _bearer(_mint(s, {"exp": datetime.now(timezone.utc) - timedelta(seconds=1)})),
    "nbf in the future": lambda s: _bearer(_mint(s, {"nbf": datetime.now(timezone.utc) + LATER})),
    "iat in the future": lambda s: _bearer(_mint(s, {"iat": datetime.now(timezone.utc) + LATER})),
    "no exp": lambda s: _bearer(_mint(s, drop=("exp",))),
    "no iat": lambda s: _bearer(_mint(s, drop=("iat",))),
    "no sub": lambda s: _bearer(_mint(s, drop=("sub",))),
    "no aud": lambda s: _bearer(_mint(s, drop=("aud",))),
    "no iss": lambda s: _bearer(_mint(s, drop=("iss",))),
    "wrong audience": lambda s: _bearer(_mint(s, {"aud": "billing-api"})),
    "wrong issuer": lambda s: _bearer(_mint(s, {"iss": "https://billing.example"})),
    "non-string sub": lambda s: _bearer(_mint(s, {"sub": 42})),
    "unknown user": lambda s: _bearer(_mint(s, {"sub": "mallory"})),
    "scope not a string": lambda s: _bearer(_mint(s, {"scope": ["tasks:read"]})),
    "oversized token (64 KB)": lambda s: _bearer(_mint(s, {"pad": "x" * 65_536})),
}


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # HS512 wants a 64-byte key
@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attack_is_401_with_www_authenticate(attack, client, settings):
    response = await client.get("/tasks/1", headers=ATTACKS[attack](settings))
    assert response.status_code == 401, (attack, response.status_code, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer"), (attack, response.headers)
    assert response.json()["detail"] in {"Not authenticated", "Could not validate credentials"}, response.text


@pytest.mark.anyio
async def test_valid_token_without_the_scope_is_403(client, settings):
    response = await client.post("/tasks", json={"title": "x"}, headers=_bearer(_mint(settings, {"scope": "tasks:read"})))
    assert response.status_code == 403, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')


@pytest.mark.anyio
async def test_valid_token_reads_own_task_not_others(client, settings):
    own = await client.get("/tasks/1", headers=_bearer(_mint(settings)))
    assert own.status_code == 200 and own.json()["owner"] == "alice", own.text
    bobs = await client.get("/tasks/1", headers=_bearer(_mint(settings, {"sub": "bob", "scope": "tasks:read"})))
    assert bobs.status_code == 404, bobs.text


@pytest.mark.anyio
async def test_login_failures_look_alike_and_no_hash_leaves(client, ns):
    wrong = await client.post("/token", data={"username": "alice", "password": "guess"})
    unknown = await client.post("/token", data={"username": "mallory", "password": "guess"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() and wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]
    login = await client.post("/token", data={"username": "bob", "password": ns["PASSWORDS"]["bob"]})
    me = await client.get("/users/me", headers=_bearer(login.json()["access_token"]))
    assert me.status_code == 200 and me.json() == {"username": "bob", "full_name": "Bob Dylan"}
    assert not any("argon2" in r.text or "hashed_password" in r.text for r in (login, me, wrong))


def test_settings_refuse_a_short_key(ns, monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("TASKS_JWT_SECRET", secrets.token_urlsafe(8))
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        ns["Settings"]()
