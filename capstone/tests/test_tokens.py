"""Lesson 02's and lesson 10's attack table against the service: every forged, expired or malformed
token is a 401 with WWW-Authenticate, never a 200 and never a 5xx."""

import base64
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

pytestmark = pytest.mark.anyio


def b64(part: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


def forged_tokens(keys, user_id: int) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    good = {"sub": str(user_id), "iss": "taskservice", "aud": "taskservice-api", "iat": now,
            "exp": now + timedelta(minutes=5), "jti": "j1"}
    kid = {"kid": keys.kid}

    def signed(claims: dict, key=keys.private_key, headers=kid) -> str:
        return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)

    raw_public = keys.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    valid = signed(good)
    header, payload, signature = valid.split(".")
    tampered_payload = b64({**json.loads(base64.urlsafe_b64decode(payload + "==")), "sub": str(user_id + 1)})
    without = {name: {k: v for k, v in good.items() if k != name} for name in ("exp", "iat", "sub", "aud", "iss")}
    return {
        "expired": signed({**good, "iat": now - timedelta(hours=1), "exp": now - timedelta(minutes=45)}),
        "wrong audience": signed({**good, "aud": "another-api"}),
        "wrong issuer": signed({**good, "iss": "someone-else"}),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', **kid})}.{payload}.",
        "HS256 signed with the public key": jwt.encode(good, raw_public, algorithm="HS256", headers=kid),
        "unknown kid": signed(good, ed25519.Ed25519PrivateKey.generate(), {"kid": "not-ours"}),
        "our kid, another key": signed(good, ed25519.Ed25519PrivateKey.generate()),
        "no kid": signed(good, headers=None),
        "missing exp": signed(without["exp"]),
        "missing iat": signed(without["iat"]),
        "missing sub": signed(without["sub"]),
        "tampered payload": f"{header}.{tampered_payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "exp in 10**12 s (lifetime unbounded)": signed({**good, "exp": 10**12}),
        "issued in the future": signed({**good, "iat": now + timedelta(hours=1), "exp": now + timedelta(hours=1, minutes=5)}),
        "exp as a string (PyJWT takes it)": signed({**good, "exp": str(int((now + timedelta(minutes=5)).timestamp()))}),
        "iat as a string": signed({**good, "iat": str(int(now.timestamp()))}),
        "sub not a user id": signed({**good, "sub": "admin"}),
        "sub of 5000 digits": signed({**good, "sub": "9" * 5000}),
        "user that does not exist": signed({**good, "sub": str(2**31 - 1)}),
        "not a JWT": "hello",
        "empty segments": "..",
        "garbage base64": "eyJ!!.eyJ!!.sig",
    }


async def test_every_attack_is_a_401_with_www_authenticate(client, app, make_member):
    ann = await make_member("ann@example.com")
    assert (await client.get("/users/me", headers=ann.headers)).status_code == 200, "the honest token must work"
    outcomes = {}
    for name, token in forged_tokens(app.state.keys, ann.id).items():
        response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        outcomes[name] = (response.status_code, response.headers.get("www-authenticate", "")[:6])
    refused = {name: outcome for name, outcome in outcomes.items() if outcome != (401, "Bearer")}
    assert not refused, f"tokens not refused with 401 + WWW-Authenticate: Bearer: {refused}"


async def test_the_header_says_why_for_an_expired_token(client, app, make_member):
    ann = await make_member("ann@example.com")
    expired = forged_tokens(app.state.keys, ann.id)["expired"]
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="the token has expired"'


@pytest.mark.parametrize("authorization", [None, "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer"])
async def test_a_missing_or_non_bearer_header_is_a_401(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/users/me", "/tasks", "/tasks/export", "/tasks/1"):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer"), path
