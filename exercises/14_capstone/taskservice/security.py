"""Passwords (pwdlib argon2, off the event loop) and access tokens (Ed25519 JWT with a kid, a JWKS).

Lesson 02: argon2 via pwdlib, a dummy verify for unknown emails, 401 + WWW-Authenticate, required
claims, pinned algorithm, audience and issuer checked. Lesson 10: an asymmetric key (EdDSA), its
public half published as a JWKS, `kid` in every token, the lifetime bounded by us (PyJWT's
`require` only checks that `exp` is present, not that it is near).
"""

import base64
import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Annotated

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from jwt.algorithms import OKPAlgorithm
from pwdlib import PasswordHash
from starlette.concurrency import run_in_threadpool

from .db import SessionDep, SessionFactoryDep
from .models import MAX_ID, User
from .settings import Settings

ALGORITHM = "EdDSA"  # pinned: never taken from the token's header (alg none, HS256-with-the-public-key)
REQUIRED_CLAIMS = ["iat", "sub", "iss", "aud", "jti"]
CLOCK_SKEW = timedelta(seconds=30)

password_hash = PasswordHash.recommended()


@cache
def dummy_hash() -> str:
    """A hash of no one's password: an unknown email costs one argon2 verify too (no timing oracle)."""
    return password_hash.hash(uuid.uuid4().hex)


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU: in the threadpool, the event loop keeps serving (lesson 03)
    return await run_in_threadpool(password_hash.hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    """Always one argon2 verify, whether or not the user exists (it is fast enough to run inline)."""
    matches = password_hash.verify(password, hashed or dummy_hash())
    return matches and hashed is not None


class InvalidToken(Exception):
    """Any reason to refuse a bearer token; its message goes into WWW-Authenticate's error_description."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenKeys:
    """The service's signing key, its public JWK and the checks every token must pass."""

    def __init__(self, settings: Settings) -> None:
        try:
            key = serialization.load_pem_private_key(settings.jwt_private_key.get_secret_value().encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"TASKSERVICE_JWT_PRIVATE_KEY is not a PEM private key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("TASKSERVICE_JWT_PRIVATE_KEY must be an Ed25519 key (python -m taskservice.keys makes one)")
        self.private_key = key
        self.public_key = key.public_key()
        jwk = OKPAlgorithm.to_jwk(self.public_key, as_dict=True)
        # RFC 7638 thumbprint as the kid: every worker derives the same kid from the same key, no extra setting.
        canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"))
        self.kid = _b64url(hashlib.sha256(canonical.encode()).digest())
        self.public_jwk = {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.lifetime = timedelta(minutes=settings.access_token_minutes)

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}

    def issue(self, user_id: int) -> str:
        now = datetime.now(timezone.utc)
        claims = {"sub": str(user_id), "iss": self.issuer, "aud": self.audience, "iat": now,
                  "exp": now + self.lifetime, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def verify(self, token: str) -> int:
        """The user id a valid token names; InvalidToken (with a reason) for anything else."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self.kid:
                raise InvalidToken("unknown key id")
            claims = jwt.decode(token, self.public_key, algorithms=[ALGORITHM], audience=self.audience,
                                issuer=self.issuer, leeway=CLOCK_SKEW, options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.PyJWTError as exc:  # the base of all of PyJWT's errors (lesson 10, section 4c)
            raise InvalidToken(type(exc).__name__) from None
        # `require` only checks presence: a signed token with exp in 10**30 would live forever (lesson 02)
        now = datetime.now(timezone.utc).timestamp()
        issued, expires = claims["iat"], claims.get("exp", claims["iat"])
        # PyJWT accepts any value int() takes ("123" too): a string here would be a TypeError, a 500 (found in review)
        if not all(type(value) in (int, float) for value in (issued, expires)):
            raise InvalidToken("iat and exp must be numbers")
        if issued > now + CLOCK_SKEW.total_seconds():
            raise InvalidToken("issued in the future")
        # PyJWT accepts a numeric string as exp ("1000000000000"): not a number to subtract from
        if not isinstance(expires, int | float) or expires - issued > self.lifetime.total_seconds() + 1:
            raise InvalidToken("lifetime longer than this service issues")
        subject = claims["sub"]
        if not (subject.isascii() and subject.isdigit() and len(subject) <= 10) or not 1 <= int(subject) <= MAX_ID:
            raise InvalidToken("malformed subject")
        return int(subject)


# --- the FastAPI side: who is calling -------------------------------------------------------------

# A missing or non-Bearer Authorization header: FastAPI's own 401 + WWW-Authenticate: Bearer (since 0.122).
bearer = OAuth2PasswordBearer(tokenUrl="/auth/token")


def token_keys(request: Request) -> TokenKeys:
    return request.app.state.keys


def refused(reason: str) -> HTTPException:
    """401 with RFC 6750's invalid_token; the reason helps a client's developer, not an attacker."""
    description = reason.replace('"', "'")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid or expired token",
                         headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'})


async def current_user(token: Annotated[str, Depends(bearer)], keys: Annotated[TokenKeys, Depends(token_keys)],
                       session: SessionDep) -> User:
    try:
        user_id = keys.verify(token)
    except InvalidToken as exc:
        raise refused(str(exc)) from None
    user = await session.get(User, user_id)
    if user is None:
        raise refused("no such user")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def streaming_user_id(token: Annotated[str, Depends(bearer)], keys: Annotated[TokenKeys, Depends(token_keys)],
                            sessions: SessionFactoryDep) -> int:
    """current_user for an endless stream: the check runs on a session closed right after, so the stream
    holds no pooled connection (a yield dependency's session would stay open as long as the stream: lesson 06)."""
    try:
        user_id = keys.verify(token)
    except InvalidToken as exc:
        raise refused(str(exc)) from None
    async with sessions() as session:
        if await session.get(User, user_id) is None:
            raise refused("no such user")
    return user_id


StreamingUserId = Annotated[int, Depends(streaming_user_id)]
