"""A bounded, mixed load against a running taskservice; throughput and latency per operation.

    python capstone/loadtest.py --url http://127.0.0.1:8000 --seconds 20 --users 20

Each virtual user signs up and logs in once (the set-up phase: two argon2 computations on the server
per user, timed but kept out of the throughput), then loops until the bound: create a task, list its
tasks page by page (keyset cursor), read one, export them all as a JSON Lines stream. The loop is
bounded by a duration (`--seconds`: no request starts after it) and/or a number of requests
(`--requests`). It prints the throughput, p50/p95/p99 per operation and the failed requests by status
(exit code 1 if any failed); from Python, `await run_load(url, ...)` returns every latency for a plot.

Written on httpx.AsyncClient rather than locust: no new dependency (locust brings gevent, whose
monkey-patching does not belong in a notebook's asyncio kernel), it runs inside the notebook's event
loop, and it speaks the client the course uses everywhere. The price: one Python process generates
the load, so on a small machine the client's own CPU bounds the throughput it can show; compare
configurations measured the same way, never read the figures as a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

SETUP = ("signup", "login")
MIXED = ("create", "list", "get", "export")
OPERATIONS = SETUP + MIXED
PAGE_SIZE = 5  # small pages, so that a list walks more than one of them
MAX_PAGES = 3  # a user with many tasks reads its first pages only, as a UI would


@dataclass
class LoadResult:
    """What a run measured: every latency (seconds) by operation, every failure by status."""

    users: int
    seconds: float = 0.0  # wall time of the mixed phase (the set-up excluded)
    setup_seconds: float = 0.0  # wall time of the signups and logins (0 when accounts were given)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    failures: Counter = field(default_factory=Counter)  # "503" or "ReadTimeout" -> count
    failures_by_operation: Counter = field(default_factory=Counter)  # ("create", "503") -> count

    def values(self, operations: tuple[str, ...] = MIXED) -> list[float]:
        return [value for operation in operations for value in self.latencies[operation]]

    @property
    def requests(self) -> int:
        """Requests of the mixed phase (what the throughput counts)."""
        return len(self.values(MIXED))

    @property
    def errors(self) -> int:
        return sum(self.failures.values())

    @property
    def throughput(self) -> float:
        """Mixed-phase requests answered per second (failed ones included)."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float, operations: tuple[str, ...] | str = MIXED) -> float:
        """The q-th percentile (0-100) in seconds, of one operation or of several (default: the mixed phase)."""
        return percentile(self.values((operations,) if isinstance(operations, str) else operations), q)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per operation, and "mixed" for the four of the loop: count, p50, p95, p99 in milliseconds."""
        rows = {}
        for name, operations in [*((op, (op,)) for op in OPERATIONS), ("mixed", MIXED)]:
            values = self.values(operations)
            if values:
                rows[name] = {"count": len(values), **{f"p{q}": 1000 * percentile(values, q) for q in (50, 95, 99)}}
        return rows

    def report(self) -> str:
        lines = [f"{self.users} virtual users; set-up (signup + login each) {self.setup_seconds:.1f} s; "
                 f"then {self.requests} requests in {self.seconds:.1f} s: {self.throughput:.0f} requests/s; "
                 f"{self.errors} failed",
                 f"{'operation':<10}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
        for operation, row in self.summary().items():
            lines.append(f"{operation:<10}{row['count']:>7}{row['p50']:>9.1f}{row['p95']:>9.1f}{row['p99']:>9.1f}")
        if self.failures:
            lines.append("failed: " + ", ".join(f"{why} x{count}" for why, count in sorted(self.failures.items())))
        if not self.users:
            lines.append("no account could sign up and log in: the mixed load did not run")
        return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Accounts:
    """Signed-up users' access tokens: a second run (or another deployment with the same key) reuses them."""

    tokens: list[str]
    credentials: list[tuple[str, str]]  # (email, password) of the same users, for logins during a run
    setup: LoadResult  # the signups' and logins' latencies and failures


class _Budget:
    """When to stop: a deadline, a number of requests, or both."""

    def __init__(self, seconds: float | None, requests: int | None) -> None:
        if seconds is None and requests is None:
            raise ValueError("bound the run: give seconds, requests or both")
        self.deadline = time.monotonic() + seconds if seconds is not None else math.inf
        self.left = requests if requests is not None else math.inf

    def take(self) -> bool:
        """May one more request start? (Counts it.)"""
        if time.monotonic() >= self.deadline or self.left <= 0:
            return False
        self.left -= 1
        return True


class _User:
    """One virtual user, timing every request it makes into `result`."""

    def __init__(self, client: httpx.AsyncClient, result: LoadResult, token: str | None = None) -> None:
        self.client, self.result = client, result
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.task_ids: list[int] = []

    async def timed(self, operation: str, method: str, path: str, *, ok: tuple[int, ...] = (200,),
                    **kwargs) -> httpx.Response | None:
        """Send one request, record its latency and, unless its status is in `ok`, its failure."""
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            response, failure = None, type(exc).__name__
        else:
            failure = None if response.status_code in ok else str(response.status_code)
        self.result.latencies[operation].append(time.perf_counter() - started)
        if failure:
            self._failed(operation, failure)
            return None
        return response

    async def timed_stream(self, operation: str, path: str) -> list[str] | None:
        """GET a streamed body line by line as it arrives; the latency runs to its last byte."""
        started = time.perf_counter()
        lines, failure = [], None
        try:
            async with self.client.stream("GET", path, headers=self.headers) as response:
                if response.status_code == 200:
                    lines = [line async for line in response.aiter_lines() if line]
                else:
                    failure = str(response.status_code)
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        self.result.latencies[operation].append(time.perf_counter() - started)
        if failure:
            self._failed(operation, failure)
            return None
        return lines

    def _failed(self, operation: str, why: str) -> None:
        self.result.failures[why] += 1
        self.result.failures_by_operation[(operation, why)] += 1

    async def sign_up(self, email: str, password: str) -> str | None:
        """Signup, then a token by the OAuth2 password flow; the token, or None if either failed."""
        if await self.timed("signup", "POST", "/auth/signup", ok=(201,), json={"email": email, "password": password}) is None:
            return None
        return await self.log_in(email, password)

    async def log_in(self, email: str, password: str) -> str | None:
        token = await self.timed("login", "POST", "/auth/token", data={"username": email, "password": password})
        return token.json()["access_token"] if token is not None else None

    async def one_round(self, budget: _Budget, round_number: int) -> bool:
        """create, list (page by page), get, export; False once the budget is spent."""
        if not budget.take():
            return False
        created = await self.timed("create", "POST", "/tasks", ok=(201,), json={"title": f"load task {round_number}"})
        if created is not None:
            self.task_ids.append(created.json()["id"])
        cursor = None
        for _ in range(MAX_PAGES):
            if not budget.take():
                return False
            params = {"limit": PAGE_SIZE, **({"cursor": cursor} if cursor else {})}
            page = await self.timed("list", "GET", "/tasks", params=params)
            cursor = page.json().get("next_cursor") if page is not None else None
            if not cursor:
                break
        if self.task_ids:
            if not budget.take():
                return False
            await self.timed("get", "GET", f"/tasks/{self.task_ids[round_number % len(self.task_ids)]}")
        if not budget.take():
            return False
        lines = await self.timed_stream("export", "/tasks/export")
        if lines is not None:
            try:
                exported = [json.loads(line) for line in lines]
            except ValueError:
                self._failed("export", "not JSON Lines")
            else:
                if len(exported) < len(self.task_ids):  # a stream cut short is a failure, whatever its status
                    self._failed("export", "short stream")
        return True


def _client(url: str, users: int, timeout: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)  # a connection per user
    return httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits)


async def sign_up_users(url: str, users: int, *, timeout: float = 60.0) -> Accounts:
    """`users` fresh accounts (signed up and logged in at once); those that failed are left out."""
    setup = LoadResult(users=users)
    run_id = secrets.token_hex(4)  # fresh emails on every run: the same database can be loaded again
    async with _client(url, users, timeout) as client:
        started = time.perf_counter()
        credentials = [(f"load-{run_id}-{n}@example.com", secrets.token_urlsafe(16)) for n in range(users)]
        tokens = await asyncio.gather(*(_User(client, setup).sign_up(*pair) for pair in credentials))
        setup.setup_seconds = time.perf_counter() - started
    signed_up = [(token, pair) for token, pair in zip(tokens, credentials) if token]
    return Accounts(tokens=[token for token, _ in signed_up], credentials=[pair for _, pair in signed_up], setup=setup)


async def run_load(url: str, *, seconds: float | None = 10.0, requests: int | None = None, users: int = 10,
                   accounts: Accounts | None = None, concurrency: int | None = None, logins: int = 0,
                   timeout: float = 30.0) -> LoadResult:
    """Sign up `users` (unless `accounts` are given), then run the mixed loop until the bound.

    `concurrency`: loops running at once (default: one per account); more loops than accounts share
    the accounts round-robin, as one person's browser tabs and phone do (signups cost two argon2 runs).
    `logins`: that many more loops that only log in, again and again, during the run (people signing in
    all day long: an argon2 verify each), timed as "login"; the request bound does not count them.
    """
    if seconds is None and requests is None:  # refused before anything is sent
        raise ValueError("bound the run: give seconds, requests or both")
    if accounts is None:
        accounts = await sign_up_users(url, users, timeout=timeout)
    setup = accounts.setup
    loops = [accounts.tokens[n % len(accounts.tokens)] for n in range(concurrency or len(accounts.tokens))] if accounts.tokens else []
    result = LoadResult(users=len(loops), setup_seconds=setup.setup_seconds,
                        latencies={**{op: [] for op in OPERATIONS}, **{op: list(setup.latencies[op]) for op in SETUP}},
                        failures=Counter(setup.failures), failures_by_operation=Counter(setup.failures_by_operation))
    async with _client(url, max(1, len(loops) + logins), timeout) as client:
        budget = _Budget(seconds, requests)  # the mixed phase's bound starts now

        async def user(token: str) -> None:
            virtual, round_number = _User(client, result, token), 0
            while await virtual.one_round(budget, round_number):
                round_number += 1

        async def signing_in(email: str, password: str) -> None:
            virtual = _User(client, result)
            while not done.is_set():
                if await virtual.log_in(email, password) is None:
                    return

        done = asyncio.Event()

        async def mixed() -> None:
            try:
                await asyncio.gather(*(user(token) for token in loops))
            finally:
                done.set()  # the login loops stop with the mixed ones

        credentials = accounts.credentials
        started = time.perf_counter()
        await asyncio.gather(mixed(), *(signing_in(*credentials[n % len(credentials)]) for n in range(logins if credentials else 0)))
        result.seconds = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the service's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--seconds", type=float, default=None, help="no request starts after this many seconds (default 10)")
    parser.add_argument("--requests", type=int, default=None, help="stop after this many requests (signups and logins not counted)")
    parser.add_argument("--users", type=int, default=10, help="virtual users running at once (default 10)")
    parser.add_argument("--logins", type=int, default=0, help="more loops that only log in, all the time (default 0)")
    args = parser.parse_args(argv)
    if args.seconds is None and args.requests is None:
        args.seconds = 10.0
    if args.users < 1 or args.logins < 0 or (args.seconds is not None and args.seconds <= 0) or (
            args.requests is not None and args.requests < 1):
        parser.error("--users, --seconds and --requests must be positive, --logins not negative")
    result = asyncio.run(run_load(args.url, seconds=args.seconds, requests=args.requests, users=args.users, logins=args.logins))
    print(result.report())
    return 1 if result.errors else 0  # a failed request fails the run (a CI step can gate on it)


if __name__ == "__main__":
    sys.exit(main())
