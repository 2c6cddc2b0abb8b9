"""The PyJWT / cryptography / Starlette / httpx behaviours lesson 10 and its exercise rely on.

Each test names one behaviour the lesson asserts or builds on, so that an upgrade which changes it
fails here with a clear name (not only as an nbval diff). The JWKS is served by a tiny stdlib
HTTP server on 127.0.0.1 whose answers and fetch count each test controls.
"""

from __future__ import annotations

import inspect
import json
import socket
import struct
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from starlette.responses import Response


class JWKSServer:
    """Serves `body` (bytes) with `status` at any path; counts the fetches."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.status = 200
        self.fetches = 0
        self.delay_s = 0.0  # how long an answer is held at most: `released` (set when the server stops) ends it early
        self.released = threading.Event()
        self.reset_mid_body = False  # send the headers and half a body, then drop the connection
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.fetches += 1
                owner.released.wait(owner.delay_s)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                if owner.reset_mid_body:
                    self.send_header("Content-Length", str(2 * len(owner.body)))
                    self.end_headers()
                    self.wfile.write(owner.body)
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    self.connection.close()
                    return
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def publish(self, *keys: tuple[str, ed25519.Ed25519PrivateKey]) -> None:
        jwks = [{**OKPAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid, "use": "sig"} for kid, private in keys]
        self.body = json.dumps({"keys": jwks}).encode()


@contextmanager
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()  # an answer still held (a client that timed out) is not waited for
        server.httpd.shutdown()
        server.httpd.server_close()


class FakeMonotonic:
    """PyJWT's clock (`time.monotonic` in jwks_client, api_jwk and jwk_set_cache), moved only by the test.

    The cooldown and the cache lifespan are then asserted by logic, not by a race against the wall clock:
    under four loaded CI workers, a 0.5 s cooldown could end between two calls meant to fall within it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import jwt.api_jwk
        import jwt.jwk_set_cache
        import jwt.jwks_client

        self.now = 1_000.0
        clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
        clock.monotonic = lambda: self.now
        for module in (jwt.jwks_client, jwt.api_jwk, jwt.jwk_set_cache):
            assert module.time is time, f"{module.__name__} no longer reads the clock as `time.monotonic()`"
            monkeypatch.setattr(module, "time", clock)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_pyjwk_infers_the_algorithm_from_okp_and_ec_keys():
    ed = PyJWK_of(OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True))
    es = PyJWK_of(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True))
    assert (ed.key_type, ed.algorithm_name) == ("OKP", "EdDSA")
    assert (es.key_type, es.algorithm_name) == ("EC", "ES256")


def PyJWK_of(data: dict) -> jwt.PyJWK:  # noqa: N802
    return jwt.PyJWK(data)


def test_pyjwkclient_defaults_lesson_10_quotes():
    defaults = {name: p.default for name, p in inspect.signature(jwt.PyJWKClient).parameters.items()}
    assert defaults["cache_jwk_set"] is True and defaults["lifespan"] == 300
    assert defaults["cooldown_duration"] == 30 and defaults["cache_keys"] is False and defaults["timeout"] == 30
    assert defaults["max_cached_keys"] == 16


def test_jwks_client_errors_are_pyjwterrors_but_not_invalid_token_errors():
    assert issubclass(jwt.PyJWKClientConnectionError, jwt.PyJWKClientError)
    assert issubclass(jwt.PyJWKClientError, jwt.PyJWTError)
    assert not issubclass(jwt.PyJWKClientError, jwt.InvalidTokenError)  # `except InvalidTokenError` misses it: a 500
    assert issubclass(jwt.exceptions.PyJWKSetError, jwt.PyJWTError)
    assert not issubclass(jwt.exceptions.PyJWKSetError, jwt.PyJWKClientError)


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (503, b"down", jwt.PyJWKClientConnectionError),
        (200, b"<html>maintenance</html>", json.JSONDecodeError),  # not a PyJWT exception: the docstring does not say
        (200, "<html>Wartung: zurück um 18 Uhr</html>".encode("latin-1"), UnicodeDecodeError),  # a ValueError, not a JSONDecodeError
        (200, b'{"keys": []}', jwt.exceptions.PyJWKSetError),
        (200, b"[]", jwt.PyJWKClientError),
    ],
    ids=["http-error", "not-json", "not-utf-8", "no-keys", "not-an-object"],
)
def test_what_a_failed_jwks_fetch_raises(status, body, raised):
    with jwks_server() as server:
        server.status, server.body = status, body
        with pytest.raises(raised) as caught:
            jwt.PyJWKClient(server.url, timeout=2).get_signing_key("any")
    assert type(caught.value) is raised


def test_a_connection_dropped_mid_body_is_an_oserror_not_a_pyjwterror():
    with jwks_server() as server:
        server.body, server.reset_mid_body = b'{"keys": [', True
        with pytest.raises(ConnectionResetError):  # json.load reads the body outside PyJWT's except clause
            jwt.PyJWKClient(server.url, timeout=2).get_signing_key("any")
    assert issubclass(ConnectionResetError, OSError) and not issubclass(ConnectionResetError, jwt.PyJWTError)
    assert not issubclass(UnicodeDecodeError, json.JSONDecodeError) and issubclass(UnicodeDecodeError, ValueError)


def test_a_jwks_slower_than_the_timeout_is_a_pyjwkclient_connection_error():
    # The answer is held 20 s (200 times the client's timeout, under PyJWT's default of 30 s): an error
    # before it can only be the 0.1 s timeout. No wall-clock bound (CI once had one: a loaded machine
    # can take longer than 0.45 s to raise it).
    with jwks_server() as server:
        server.delay_s = 20
        with pytest.raises(jwt.PyJWKClientConnectionError, match="timed out"):
            jwt.PyJWKClient(server.url, timeout=0.1).get_signing_key("any")
        assert server.fetches == 1 and not server.released.is_set()  # the request arrived; it was never answered


def test_connection_refused_is_a_pyjwkclient_connection_error():
    with jwks_server() as server:
        url = server.url
    with pytest.raises(jwt.PyJWKClientConnectionError):
        jwt.PyJWKClient(url, timeout=2).get_signing_key("any")


def test_the_jwks_is_cached_and_unknown_kids_refetch_once_per_cooldown(monkeypatch):
    key = ed25519.Ed25519PrivateKey.generate()
    clock = FakeMonotonic(monkeypatch)
    with jwks_server() as server:
        server.publish(("k1", key))
        client = jwt.PyJWKClient(server.url, cooldown_duration=0.5)
        for _ in range(5):
            assert client.get_signing_key("k1").key_id == "k1"
        assert server.fetches == 1
        with pytest.raises(jwt.PyJWKClientError):  # within the cooldown of the first fetch: no refetch
            client.get_signing_key("k2")
        assert server.fetches == 1
        clock.advance(0.55)
        server.publish(("k1", key), ("k2", ed25519.Ed25519PrivateKey.generate()))
        assert client.get_signing_key("k2").key_id == "k2"  # one forced refetch
        assert server.fetches == 2
        for _ in range(3):
            with pytest.raises(jwt.PyJWKClientError):
                client.get_signing_key("made-up")
        assert server.fetches == 2  # that refetch started a new cooldown


def test_a_cached_key_by_kid_outlives_its_retirement():
    key = ed25519.Ed25519PrivateKey.generate()
    with jwks_server() as server:
        server.publish(("old", key))
        lru = jwt.PyJWKClient(server.url, cache_keys=True, lifespan=0.1)
        plain = jwt.PyJWKClient(server.url, lifespan=0.1)
        lru.get_signing_key("old"), plain.get_signing_key("old")
        server.publish(("new", ed25519.Ed25519PrivateKey.generate()))
        time.sleep(0.15)
        assert lru.get_signing_key("old").key_id == "old"  # no expiry on the per-kid LRU
        with pytest.raises(jwt.PyJWKClientError):
            plain.get_signing_key("old")


def test_algorithm_confusion_with_the_public_key():
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key()
    raw = public.public_bytes_raw()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pyjwk = jwt.PyJWK(OKPAlgorithm.to_jwk(public, as_dict=True))
    forged = jwt.encode({"sub": "admin"}, raw, algorithm="HS256")
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(forged, pyjwk, algorithms=["EdDSA"])
    with pytest.raises(jwt.InvalidAlgorithmError, match="does not match the key's algorithm"):
        jwt.decode(forged, pyjwk, algorithms=["HS256"])
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode({"sub": "admin"}, pem, algorithm="HS256")
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(forged, pem, algorithms=["HS256"])
    with pytest.raises(jwt.InvalidKeyError):  # a JWK as a JSON string is refused as an HMAC secret too
        jwt.decode(forged, json.dumps(OKPAlgorithm.to_jwk(public, as_dict=True)), algorithms=["HS256"])
    assert jwt.decode(forged, raw, algorithms=["HS256"]) == {"sub": "admin"}  # raw bytes + header alg: accepted


def test_ed25519_signatures_are_deterministic_es256_are_not():
    ed = ed25519.Ed25519PrivateKey.generate()
    es = ec.generate_private_key(ec.SECP256R1())
    assert jwt.encode({"a": 1}, ed, algorithm="EdDSA") == jwt.encode({"a": 1}, ed, algorithm="EdDSA")
    assert jwt.encode({"a": 1}, es, algorithm="ES256") != jwt.encode({"a": 1}, es, algorithm="ES256")


def test_a_public_key_cannot_sign():
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(AttributeError):
        jwt.encode({"sub": "admin"}, public, algorithm="EdDSA")


def test_set_cookie_renders_the_refresh_cookie_attributes():
    response = Response()
    response.set_cookie("refresh_token", "x", max_age=60, path="/auth", secure=True, httponly=True, samesite="strict")
    header = response.headers["set-cookie"]
    assert {"HttpOnly", "Secure", "SameSite=strict", "Path=/auth", "Max-Age=60"} <= {p.strip() for p in header.split(";")}


def test_httpx_does_not_send_a_secure_cookie_over_plain_http():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "refresh_token=x; Path=/; Secure; HttpOnly"})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://127.0.0.1") as client:
        client.get("/login")
        client.get("/refresh")
    assert seen == [None, None]


def test_the_threadpool_that_runs_def_dependencies_has_40_threads():
    import anyio.to_thread

    async def total() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    assert anyio.run(total) == 40  # lesson 10, section 4: waiting JWKS fetches hold these threads


def fetches_for_five_concurrent_lookups(*, without_pyjwts_lock: bool = False) -> int:
    """Five threads look up one key while the JWKS server holds its first answer, so the lookups overlap."""
    key = ed25519.Ed25519PrivateKey.generate()
    with jwks_server() as server:
        server.publish(("k1", key))
        server.delay_s = 60  # every answer is held until `released` below (or the server stops)
        client = jwt.PyJWKClient(server.url, timeout=60)
        if without_pyjwts_lock:  # the control: the same client with its lock taken out
            client._client_lock = nullcontext()
        threads = [threading.Thread(target=client.get_signing_key, args=("k1",)) for _ in range(5)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while server.fetches < (5 if without_pyjwts_lock else 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not without_pyjwts_lock:
            time.sleep(0.5)  # the first answer still held: time for the other four to come, which the lock stops
        server.released.set()
        for thread in threads:
            thread.join(60)
        return server.fetches


def test_concurrent_lookups_share_one_fetch():
    # lesson 10, section 4: PyJWKClient's lock, one fetch at a time, the others wait for it and read the cache.
    # The control shows the lookups really overlap in this test: without the lock the same five threads fetch five
    # times (a test with lookups one after another would see one fetch from the cache alone, lock or not).
    assert fetches_for_five_concurrent_lookups(without_pyjwts_lock=True) == 5
    assert fetches_for_five_concurrent_lookups() == 1
