"""Sign-up, login, who am I: status codes, the outbox job, no hash anywhere (lessons 01, 02, 13)."""

import json
import threading

import pytest
from sqlalchemy import text

from taskservice import security

from .conftest import PASSWORD

pytestmark = pytest.mark.anyio


async def jobs_for(connection, email: str) -> list[dict]:
    rows = await connection.execute(text(
        "SELECT payload, xmin::text AS tx FROM pgqueuer WHERE entrypoint = 'send_welcome_mail'"))
    return [{**json.loads(row.payload), "tx": row.tx} for row in rows if json.loads(row.payload)["email"] == email]


async def test_signup_answers_201_and_queues_the_mail_in_its_transaction(client, connection):
    response = await client.post("/auth/signup", json={"email": "Ann@Example.com", "password": PASSWORD},
                                 headers={"X-Request-ID": "signup-ann"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "email", "created_at"} and body["email"] == "ann@example.com"
    assert response.headers["location"] == "/users/me"
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00"), "an aware UTC time (lesson 08)"
    [job] = await jobs_for(connection, "ann@example.com")
    assert (job["user_id"], job["request_id"]) == (body["id"], "signup-ann")
    user_tx = (await connection.execute(text("SELECT xmin::text FROM users WHERE id = :id"), {"id": body["id"]})).scalar_one()
    assert job["tx"] == user_tx, "the job and the user were written by two transactions: enqueue on the session's connection"


async def test_a_refused_signup_leaves_no_user_and_no_job(client, connection):
    first = await client.post("/auth/signup", json={"email": "bob@example.com", "password": PASSWORD})
    again = await client.post("/auth/signup", json={"email": "BOB@example.com", "password": "another password"})
    assert (first.status_code, again.status_code) == (201, 409), again.text
    assert again.json() == {"detail": "this email is already registered"}
    assert len(await jobs_for(connection, "bob@example.com")) == 1, "the refused signup queued a second welcome mail"
    users = (await connection.execute(text("SELECT count(*) FROM users WHERE email = 'bob@example.com'"))).scalar_one()
    assert users == 1


@pytest.mark.parametrize("body", [
    {"email": "not-an-email", "password": PASSWORD},
    {"email": "cat@example.com", "password": "short"},
    {"email": "cat@example.com", "password": "x" * 129},
    {"email": "cat@example.com"},
    {"email": "c\u0000at@example.com", "password": PASSWORD},  # PostgreSQL cannot store a NUL: 422, not its 500
])
async def test_signup_refuses_bad_input_with_422_and_queues_nothing(client, connection, body):
    response = await client.post("/auth/signup", json=body)
    assert response.status_code == 422, response.text
    if "password" in body:
        assert json.dumps(body["password"]) not in response.text, "a 422 must not echo the password back"
    assert await jobs_for(connection, "cat@example.com") == []


async def test_login_gives_a_bearer_token_that_opens_users_me(client, make_member):
    ann = await make_member("ann@example.com")
    response = await client.post("/auth/token", data={"username": "ANN@example.com", "password": PASSWORD})
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 15 * 60
    assert response.headers["cache-control"] == "no-store", "RFC 6749, section 5.1: a token response is never cached"
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.status_code == 200 and me.json()["id"] == ann.id, (me.status_code, me.text, me.headers)


async def test_login_refusals_look_the_same_for_unknown_email_and_wrong_password(client, make_member, monkeypatch):
    await make_member("ann@example.com")
    verified_in: list[str] = []
    real_verify = security.password_hash.verify

    def watched_verify(password: str, hashed: str) -> bool:
        verified_in.append(threading.current_thread().name)
        return real_verify(password, hashed)

    monkeypatch.setattr(security.password_hash, "verify", watched_verify)
    wrong_password = await client.post("/auth/token", data={"username": "ann@example.com", "password": "wrong password"})
    unknown = await client.post("/auth/token", data={"username": "nobody@example.com", "password": PASSWORD})
    for response in (wrong_password, unknown):
        assert response.status_code == 401
        assert response.json() == {"detail": "incorrect email or password"}
        assert response.headers["www-authenticate"] == "Bearer"
    assert len(verified_in) == 2, "an unknown email must cost one argon2 verify too (a dummy hash)"
    oversized = await client.post("/auth/token", data={"username": "ann@example.com", "password": "x" * 100_000})
    assert (oversized.status_code, oversized.json()) == (401, {"detail": "incorrect email or password"})
    assert len(verified_in) == 2, "a password no sign-up accepts is refused before argon2 runs on it"
    nul = await client.post("/auth/token", data={"username": "ann\u0000@example.com", "password": PASSWORD})
    assert (nul.status_code, nul.json()) == (401, {"detail": "incorrect email or password"}), "a NUL in the login: not a 500"
    assert threading.main_thread().name not in verified_in, "argon2 ran on the event loop's thread: use the threadpool"


async def test_users_never_see_a_password_hash(client, app, make_member):
    signup = await client.post("/auth/signup", json={"email": "dan@example.com", "password": PASSWORD})
    dan = await make_member("eve@example.com")
    me = await client.get("/users/me", headers=dan.headers)
    schema = json.dumps(app.openapi())
    for response in (signup, me):
        assert "password" not in response.text and "$argon2" not in response.text
    assert "hashed_password" not in schema, "a table model leaked into the OpenAPI document"


async def test_jwks_publishes_the_public_key_the_tokens_name(client, make_member):
    ann = await make_member("ann@example.com")
    jwks = (await client.get("/.well-known/jwks.json")).json()
    [key] = jwks["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "EdDSA") and "d" not in key, "never the private part"
    import jwt

    token = ann.headers["Authorization"].split()[1]
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="taskservice-api", issuer="taskservice")
    assert claims["sub"] == str(ann.id)

