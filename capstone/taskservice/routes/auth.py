"""Sign-up, tokens, the public keys, and who am I (lessons 01, 02, 10, 13)."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from ..db import SessionDep
from ..jobs import enqueue_welcome_mail
from ..models import AccessToken, SignupIn, User, UserRead
from ..security import CurrentUser, TokenKeys, hash_password, token_keys, verify_password
from ..telemetry import request_id_var
from . import errors

router = APIRouter(tags=["auth"])
Keys = Annotated[TokenKeys, Depends(token_keys)]
MAX_EMAIL, MAX_PASSWORD = 254, 128  # SignupIn's bounds
wrong_credentials = HTTPException(status.HTTP_401_UNAUTHORIZED, detail="incorrect email or password",
                                  headers={"WWW-Authenticate": "Bearer"})


# 400: FastAPI's own answer to a JSON body it cannot decode (bytes that are not UTF-8), found by schemathesis
@router.post("/auth/signup", status_code=status.HTTP_201_CREATED, responses=errors(400, 409, 503))
async def signup(data: SignupIn, session: SessionDep, response: Response) -> UserRead:
    """Create the account and queue its welcome mail in the same transaction (lesson 13)."""
    user = User(email=data.email, hashed_password=await hash_password(data.password))
    session.add(user)
    try:
        await session.flush()  # the unique email is the database's decision: two signups at once, one 409
    except IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="this email is already registered") from None
    await enqueue_welcome_mail(session, user.id, user.email, request_id_var.get())
    await session.commit()  # the user and the job, or neither
    response.headers["Location"] = "/users/me"
    return UserRead.model_validate(user)


@router.post("/auth/token", responses=errors(401, 503))
async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, keys: Keys,
                response: Response) -> AccessToken:
    """OAuth2 password flow: username is the email. One message for unknown email and wrong password."""
    if len(form.username) > MAX_EMAIL or len(form.password) > MAX_PASSWORD or "\x00" in form.username:
        # no sign-up accepts these: no database query (PostgreSQL refuses a NUL: a 500), no argon2 run on a megabyte
        raise wrong_credentials
    user = (await session.exec(select(User).where(User.email == form.username.lower()))).first()
    user_id, hashed = (user.id, user.hashed_password) if user else (None, None)
    # End the transaction before argon2's tens of milliseconds: the pooled connection goes back to the pool
    # instead of idling through the hash (with a small pool, concurrent logins otherwise starve every route).
    await session.commit()
    if not await verify_password(form.password, hashed) or user_id is None:
        raise wrong_credentials
    response.headers["Cache-Control"] = "no-store"  # RFC 6749, section 5.1: no cache keeps a token
    return AccessToken(access_token=keys.issue(user_id), expires_in=int(keys.lifetime.total_seconds()))


@router.get("/.well-known/jwks.json")
async def jwks(keys: Keys) -> dict[str, list[dict[str, str]]]:
    """The public key(s) tokens are signed with, for other services to verify them (lesson 10)."""
    return keys.jwks()


@router.get("/users/me", responses=errors(401, 503))
async def me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)
