"""A teacher fleet: several OpenAI-compatible servers behind one backend.

Why: one teacher server is outgrown long before the training is. Given several URLs
(`--teacher-base-url A --teacher-base-url B`, or `A,B`), each request goes to the server with
the fewest requests in flight, so a fast server takes more of the work than a slow one. A
server whose attempts fail `fail_threshold` times in a row is taken out of rotation for
`cooldown` seconds; after that ONE request tries it again (and it is back, or out for another
cool-down). A failed attempt is retried on another server at once, so a server killed mid-run
costs the run nothing: every request is answered exactly once, by some server. When every
server is out, the run stops with one line naming each server and its last failure (a
`UserError`, exit 2), before anything is finalized.

Written by hand because no maintained client does this for an OpenAI-compatible server with
our transport's semantics (httpx has no load balancing; LiteLLM's router would replace the
whole transport, its key handling and stats). The selection and cool-down rules are pure
functions over `ServerState` (`pick`, `record_success`, `record_failure`, `all_down`) so they
are tested without a server; `FleetTransport` puts them on top of one `Transport` per server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from llm_teach.backends.http import CAUSES, HTTPConfig, Session, Transport
from llm_teach.config import option
from llm_teach.credentials import split_urls
from llm_teach.errors import UserError


@dataclass
class FleetConfig:
    """How a fleet of servers treats a failing one."""

    fail_threshold: int = option("Failed attempts in a row after which a server is taken out of rotation.", 3)
    cooldown: float = option("Seconds a server taken out stays out; then one request tries it again.", 30.0)

    def __post_init__(self) -> None:
        if self.fail_threshold < 1:
            raise UserError("fleet fail_threshold must be at least 1")
        if self.cooldown < 0:
            raise UserError("fleet cooldown cannot be negative")


# -- the rules, as pure functions ------------------------------------------------------------
@dataclass
class ServerState:
    """What the fleet knows of one server. `out_until` is set while it is out of rotation (a
    time on the caller's clock); once that time has passed it is on trial: one request at a time."""

    in_flight: int = 0
    requests: int = 0  # attempts sent (the stats' per-server count)
    failures: int = 0  # attempts that failed (retryable causes)
    in_a_row: int = 0  # failures since the last success
    taken_out: int = 0  # how often it was taken out of rotation
    out_until: float | None = None
    last_error: str = ""


def available(state: ServerState, now: float) -> bool:
    """In rotation, or out with its cool-down over and no trial request already under way."""
    return state.out_until is None or (state.out_until <= now and state.in_flight == 0)


def pick(servers: Sequence[ServerState], now: float) -> int | None:
    """Index of the least-loaded available server (fewest in flight; ties to the first listed),
    or None when none is available right now."""
    best = None
    for i, s in enumerate(servers):
        if available(s, now) and (best is None or s.in_flight < servers[best].in_flight):
            best = i
    return best


def record_success(state: ServerState) -> None:
    state.in_a_row = 0
    state.out_until = None  # a trial that succeeded brings it back


def record_failure(state: ServerState, error: str, now: float, config: FleetConfig) -> None:
    """Count a failed attempt; take the server out at `fail_threshold` failures in a row, or at
    once when it was on trial (it just failed its second chance)."""
    state.failures += 1
    state.in_a_row += 1
    state.last_error = error
    on_trial = state.out_until is not None
    if on_trial or state.in_a_row >= config.fail_threshold:
        if state.out_until is None or state.out_until <= now:
            state.taken_out += 1
        state.out_until = now + config.cooldown


def all_down(servers: Sequence[ServerState], now: float) -> bool:
    """Every server is out of rotation, none is on trial (a request in flight) and none has
    finished its cool-down (it would get a trial): nothing left to send a request to. The
    fleet then stops rather than wait: a fleet that is all down is a broken setup, not a blip
    (a blip is what `fail_threshold` absorbs)."""
    return all(s.out_until is not None for s in servers) and not any(s.in_flight for s in servers) \
        and not any(s.out_until <= now for s in servers)


# -- the transport ---------------------------------------------------------------------------
class FleetSession:
    """One HTTP session per server (each with its own concurrency slots), plus the probe lock
    the openai backend uses for requests that must go alone."""

    def __init__(self, sessions: list[Session]):
        self.sessions = sessions
        self.probe_lock = asyncio.Lock()

    async def __aenter__(self) -> "FleetSession":
        return self

    async def __aexit__(self, *exc) -> None:
        for session in self.sessions:
            await session.client.aclose()


class FleetTransport:
    """`Transport`'s interface (`base_url`, `stats`, `session()`, `post()`) over several servers.

    `stats` holds the totals (`requests`, `retries` by cause) and `servers`: per server its
    masked URL, `requests`, `failures` and `taken_out` -- what manifests record.
    """

    def __init__(self, config: HTTPConfig, urls: Sequence[str], fleet: FleetConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.fleet = fleet or FleetConfig()
        self.clock = clock
        self.transports = [Transport(dataclasses.replace(config, base_url=u)) for u in urls]
        self.states = [ServerState() for _ in self.transports]
        self.base_url = ",".join(t.base_url for t in self.transports)
        self.stats: dict[str, Any] = {
            "server": self.base_url,
            "requests": 0,
            "retries": {cause: 0 for cause in CAUSES},
            "servers": [{"server": t.base_url, "requests": 0, "failures": 0, "taken_out": 0}
                        for t in self.transports],
        }

    def session(self) -> FleetSession:
        return FleetSession([t.session() for t in self.transports])

    async def post(self, session: FleetSession, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST to the least-loaded server; a failed attempt is retried on the next choice
        (after a backoff only when that is the same server), up to `max_retries` retries."""
        tried: list[int] = []
        for attempt in range(self.config.max_retries + 1):
            index = await self._choose()
            if tried and tried[-1] == index:
                await asyncio.sleep(self.transports[index].backoff(attempt - 1, None))
            tried.append(index)
            state = self.states[index]
            state.in_flight += 1
            state.requests += 1
            try:
                result = await self.transports[index].attempt(session.sessions[index], path, payload)
            finally:
                state.in_flight -= 1
            self.stats["requests"] += 1
            if isinstance(result, dict):
                record_success(state)
                self._sync(index)
                return result
            cause, error, _ = result
            record_failure(state, error, self.clock(), self.fleet)
            self._sync(index)
            if attempt < self.config.max_retries:
                self.stats["retries"][cause] += 1
        self._raise_if_down()
        last = self.states[tried[-1]].last_error
        raise UserError(f"servers {self.base_url} failed {len(tried)} attempts at {path}; last: {last}")

    async def _choose(self) -> int:
        """The server for the next attempt; waits while every server is out but one may come
        back (a cool-down running or a trial in flight), and stops the run when all are down."""
        while True:
            now = self.clock()
            index = pick(self.states, now)
            if index is not None:
                return index
            self._raise_if_down()
            await asyncio.sleep(0.05)

    def _raise_if_down(self) -> None:
        if all_down(self.states, self.clock()):
            shown = "; ".join(f"{t.base_url}: {s.last_error}" for t, s in zip(self.transports, self.states))
            raise UserError(f"all {len(self.states)} servers are down ({shown})")

    def _sync(self, index: int) -> None:
        state = self.states[index]
        self.stats["servers"][index].update(requests=state.requests, failures=state.failures,
                                            taken_out=state.taken_out)


def make_transport(config: HTTPConfig, fleet: FleetConfig | None = None) -> Transport | FleetTransport:
    """A plain `Transport` for one URL (unchanged behaviour), a `FleetTransport` for several."""
    urls = split_urls(config.base_url)
    if len(urls) <= 1:
        return Transport(config)
    return FleetTransport(config, urls, fleet)
