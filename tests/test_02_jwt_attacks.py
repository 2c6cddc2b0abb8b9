"""Lesson 02's attack table against the SOLUTION's app, as ordinary pytest tests.

The app is the one the solution notebook builds: its code cells are executed in a namespace
(check cells and cells with top-level `await` skipped, `setup_checks()` made a no-op since there
is no IPython here), then `build_app(Settings(signing_key=...))` builds it. If the solution changes,
these tests exercise the new code: nothing is copied.

Every bad token must answer 401 with `WWW-Authenticate: Bearer...` (never a 500), a valid
member token on a librarian route 403, a valid one 200. The settings refuse to start without a
key unless development is chosen explicitly.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
from coursekit import app_client
from tests.conftest import solution_namespace


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    return solution_namespace("02")


@pytest.fixture(scope="module", autouse=True)
def patrons_hashed_cheaply(ns):
    """The same patrons and passwords hashed with cheap argon2 parameters, as test suites seed their users
    (lesson 09): these tests need logins, not their cost (the exercise's check of the cost keeps the real one)."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    quick = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ns, "PATRONS", {
            name: patron.model_copy(update={"hashed_password": quick.hash(ns["PASSWORDS"][name])})
            for name, patron in ns["PATRONS"].items()
        })
        patch.setitem(ns, "DUMMY_HASH", quick.hash(secrets.token_urlsafe(16)))
        yield


@pytest.fixture(scope="module")
def settings(ns):
    return ns["Settings"](signing_key=secrets.token_urlsafe(64))  # 64 bytes: HS512 signs without a warning


@pytest.fixture
async def client(ns, settings):
    """The solution's app in process; a crash shows up as the 500 a real client gets. Loan 1 is ada's."""
    async with app_client(ns["build_app"](settings), raise_app_exceptions=False) as client:
        yield client


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _mint(settings, claims: dict | None = None, *, drop: tuple[str, ...] = (), key: str | None = None,
          algorithm: str = "HS256") -> str:
    now = datetime.now(timezone.utc)
    base = {"sub": "ada", "role": "member", "iat": now, "exp": now + timedelta(minutes=5),
            "iss": settings.token_issuer, "aud": settings.token_audience}
    base.update(claims or {})
    for name in drop:
        base.pop(name)
    return jwt.encode(base, key or settings.signing_key.get_secret_value(), algorithm=algorithm)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tampered(settings) -> dict[str, str]:
    header, payload, signature = _mint(settings).split(".")
    claims = jwt.decode(f"{header}.{payload}.{signature}", options={"verify_signature": False})
    return _bearer(f"{header}.{_b64({**claims, 'sub': 'grace', 'role': 'librarian'})}.{signature}")


def _alg_none(settings) -> dict[str, str]:
    payload = _mint(settings).split(".")[1]
    return _bearer(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.")


def _now() -> datetime:
    return datetime.now(timezone.utc)


LATER = timedelta(hours=1)
ATTACKS: dict[str, Callable[[Any], dict[str, str]]] = {
    "no Authorization header": lambda s: {},
    "wrong scheme (Basic)": lambda s: {"Authorization": "Basic " + base64.b64encode(b"ada:guess").decode()},
    "empty bearer": lambda s: {"Authorization": "Bearer "},
    "garbage": lambda s: _bearer("not-a-jwt"),
    "alg none": _alg_none,
    "tampered payload": _tampered,
    "wrong key": lambda s: _bearer(_mint(s, key=secrets.token_urlsafe(64))),
    "HS384 with the right key": lambda s: _bearer(_mint(s, algorithm="HS384")),
    "HS512 with the right key": lambda s: _bearer(_mint(s, algorithm="HS512")),
    "expired beyond the leeway": lambda s: _bearer(_mint(s, {"iat": _now() - LATER, "exp": _now() - timedelta(minutes=5)})),
    "nbf in the future": lambda s: _bearer(_mint(s, {"nbf": _now() + LATER})),
    "iat in the future": lambda s: _bearer(_mint(s, {"iat": _now() + LATER, "exp": _now() + LATER + timedelta(minutes=5)})),
    "exp = 10**30": lambda s: _bearer(_mint(s, {"exp": 10**30})),
    "exp = 10**30 as a numeric string": lambda s: _bearer(_mint(s, {"exp": str(10**30)})),
    "lifetime a day": lambda s: _bearer(_mint(s, {"exp": _now() + timedelta(days=1)})),
    "no exp": lambda s: _bearer(_mint(s, drop=("exp",))),
    "no iat": lambda s: _bearer(_mint(s, drop=("iat",))),
    "no sub": lambda s: _bearer(_mint(s, drop=("sub",))),
    "no role": lambda s: _bearer(_mint(s, drop=("role",))),
    "no aud": lambda s: _bearer(_mint(s, drop=("aud",))),
    "no iss": lambda s: _bearer(_mint(s, drop=("iss",))),
    "wrong audience": lambda s: _bearer(_mint(s, {"aud": "catalogue-api"})),
    "wrong issuer": lambda s: _bearer(_mint(s, {"iss": "https://login.bookshop.example"})),
    "non-string sub": lambda s: _bearer(_mint(s, {"sub": 42})),
    "unknown patron": lambda s: _bearer(_mint(s, {"sub": "mallory"})),
    "unknown role": lambda s: _bearer(_mint(s, {"role": "admin"})),
    "role not a string": lambda s: _bearer(_mint(s, {"role": ["librarian"]})),
}


@pytest.mark.anyio
@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attack_is_401_with_www_authenticate(attack, client, settings):
    response = await client.get("/loans/1", headers=ATTACKS[attack](settings))
    assert response.status_code == 401, (attack, response.status_code, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer"), (attack, response.headers)
    assert response.json()["detail"] in {"Not authenticated", "Invalid or expired token"}, response.text


@pytest.mark.anyio
async def test_member_on_a_librarian_route_is_403_librarian_passes(client, settings):
    member = await client.post("/loans/1/return", headers=_bearer(_mint(settings)))
    assert member.status_code == 403, member.text
    assert member.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    librarian = await client.post("/loans/1/return", headers=_bearer(_mint(settings, {"sub": "grace", "role": "librarian"})))
    assert librarian.status_code == 200 and librarian.json()["returned"] is True, librarian.text


@pytest.mark.anyio
async def test_member_reads_own_loan_librarian_reads_any(client, settings):
    own = await client.get("/loans/1", headers=_bearer(_mint(settings)))
    assert own.status_code == 200 and own.json()["borrower"] == "ada", own.text
    desk = await client.get("/loans/1", headers=_bearer(_mint(settings, {"sub": "grace", "role": "librarian"})))
    assert desk.status_code == 200 and desk.json()["borrower"] == "ada", desk.text


@pytest.mark.anyio
async def test_login_failures_look_alike_and_no_hash_leaves(client, ns):
    wrong = await client.post("/token", data={"username": "ada", "password": "guess"})
    unknown = await client.post("/token", data={"username": "mallory", "password": "guess"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() and wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"]
    login = await client.post("/token", data={"username": "ada", "password": ns["PASSWORDS"]["ada"], "scope": "librarian"})
    me = await client.get("/patrons/me", headers=_bearer(login.json()["access_token"]))
    assert me.status_code == 200 and me.json() == {"username": "ada", "full_name": "Ada Lovelace", "role": "member"}
    assert not any("argon2" in r.text or "hashed_password" in r.text for r in (login, me, wrong))


def test_settings_refuse_a_short_key(ns, monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("LIBRARY_SIGNING_KEY", secrets.token_urlsafe(8))
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        ns["Settings"]()


def test_settings_refuse_to_start_without_a_key_unless_development(ns, monkeypatch):
    from pydantic import ValidationError

    monkeypatch.delenv("LIBRARY_SIGNING_KEY", raising=False)
    monkeypatch.delenv("LIBRARY_ENVIRONMENT", raising=False)
    with pytest.raises(ValidationError, match="LIBRARY_SIGNING_KEY is not set"):
        ns["Settings"]()
    monkeypatch.setenv("LIBRARY_ENVIRONMENT", "development")
    one, two = ns["Settings"](), ns["Settings"]()
    assert len(one.signing_key.get_secret_value()) >= 32 and one.signing_key != two.signing_key  # one per process


@pytest.mark.anyio
async def test_a_key_per_process_refuses_the_other_workers_tokens(ns, monkeypatch):
    """Two app instances, as two workers would build them, behind one client that alternates."""
    monkeypatch.setenv("LIBRARY_ENVIRONMENT", "development")
    monkeypatch.delenv("LIBRARY_SIGNING_KEY", raising=False)
    workers = [ns["build_app"](ns["Settings"]()) for _ in range(2)]
    async with app_client(workers[0]) as one, app_client(workers[1]) as two:
        login = await one.post("/token", data={"username": "ada", "password": ns["PASSWORDS"]["ada"]})
        headers = _bearer(login.json()["access_token"])
        assert (await one.get("/patrons/me", headers=headers)).status_code == 200
        assert (await two.get("/patrons/me", headers=headers)).status_code == 401
