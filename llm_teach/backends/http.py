"""The HTTP transport under the openai backend: one server, reached reliably and discreetly.

A teacher behind HTTP is shared, remote and flaky, so every request goes through one path
(`Transport.post`) with bounded concurrency, a timeout, and retries with exponential backoff
and full jitter on 429 / 5xx / timeouts / dropped connections, honouring `Retry-After`. When
the last retry fails the run stops with one line naming the server and the status (a
`UserError`), before anything is finalized: losing a sample silently would bias every metric
after it. A non-retryable 4xx is `ServerRejected`, carrying the server's own explanation so the
caller can decide whether to ask again differently.

The API key is read from the environment and kept out of stats, reprs, logs and error
messages; `user:password@` credentials in the URL are masked wherever the URL is shown. Which
credential a request carries follows the one rule of `llm_teach.credentials`: the key as a
Bearer token, or else the URL's user:password as Basic auth -- set explicitly here and taken
out of the URL, so httpx never picks the URL's userinfo over the key on its own.
Nothing here knows what is being asked: the OpenAI request and answer formats live in
`llm_teach.backends.openai`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable
from urllib.parse import urlsplit

import httpx

from llm_teach.credentials import check_auth, check_url, mask_text, mask_url, split_userinfo
from llm_teach.errors import UserError

CAUSES = ("http_429", "http_5xx", "timeout", "connection", "bad_response")  # why a request was retried


@dataclass
class HTTPConfig:
    """How to reach one server and how hard to try."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1 (a URL without a path gets /v1)
    api_key_env: str | None = None  # NAME of the env var holding the key; default OPENAI_API_KEY if set
    max_concurrency: int = 8  # requests in flight at once
    timeout: float = 600.0  # seconds to wait for one response
    max_retries: int = 6  # further attempts after the first, on 429/5xx/timeouts/connection errors
    backoff_base: float = 0.5  # seconds; retry k waits uniform(0, min(backoff_max, base * 2**k))
    backoff_max: float = 30.0  # cap of one backoff wait (a Retry-After header is honoured instead)
    retry_after_max: float = 300.0  # never sleep longer than this on a server's Retry-After


class ServerRejected(UserError):
    """The server answered a request with a non-retryable 4xx status."""

    def __init__(self, message: str, status: int, detail: str):
        super().__init__(message)
        self.status = status
        self.detail = detail


class Session:
    """One event loop's HTTP client and concurrency slots (both are bound to the loop), plus a
    lock for callers that must send one request alone before the others."""

    def __init__(self, config: HTTPConfig, headers: dict[str, str], auth: tuple[str, str] | None = None):
        self.client = httpx.AsyncClient(
            headers=headers, auth=auth, timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(max_connections=config.max_concurrency,
                                max_keepalive_connections=config.max_concurrency))
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.probe_lock = asyncio.Lock()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()


class Transport:
    """POSTs JSON to one server with retries; counts attempts and retries into `stats`.

    `stats` starts as `{"server", "requests", "retries": {cause: n}}`; the caller may add its
    own counters to the same dict (the openai backend's `stats`).
    """

    def __init__(self, config: HTTPConfig):
        if config.max_concurrency < 1:
            raise UserError("--max-concurrency must be at least 1")
        if config.max_retries < 0:
            raise UserError("--max-retries cannot be negative")
        self.config = config
        try:
            check_url(config.base_url)
            check_auth(config.base_url, config.api_key_env)
        except ValueError as exc:
            raise UserError(f"--base-url: {exc}") from None
        # Requests go to the URL without userinfo; the credential is set explicitly (see above).
        self.url, self._basic_auth = split_userinfo(normalize_base_url(config.base_url))
        self.base_url = mask_url(normalize_base_url(config.base_url))  # what messages, stats and reprs show
        self._api_key = None if self._basic_auth else read_api_key(config.api_key_env)
        self.stats: dict[str, Any] = {
            "server": self.base_url,
            "requests": 0,  # HTTP attempts, retries included
            "retries": {cause: 0 for cause in CAUSES},
        }

    def session(self) -> Session:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return Session(self.config, headers, auth=self._basic_auth)

    async def post(self, session: Session, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries. Returns the JSON body of a 200, or raises a one-line UserError
        (`ServerRejected` for a 4xx, which is never retried)."""
        cfg = self.config
        last = ""
        for attempt in range(cfg.max_retries + 1):
            result = await self.attempt(session, path, payload)
            if isinstance(result, dict):
                return result
            cause, last, wait = result
            if attempt == cfg.max_retries:
                break
            self.stats["retries"][cause] += 1
            await asyncio.sleep(self.backoff(attempt, wait))
        raise UserError(f"server {self.base_url} failed {cfg.max_retries + 1} attempts at {path}; last: {last}")

    async def attempt(self, session: Session, path: str,
                      payload: dict[str, Any]) -> dict[str, Any] | tuple[str, str, float | None]:
        """One POST: the JSON body of a 200, or `(cause, description, Retry-After seconds or
        None)` of a retryable failure; a non-retryable 4xx raises `ServerRejected`. The retry
        policy is the caller's (`post` here, the fleet's failover in `backends.fleet`)."""
        cfg, url = self.config, self.url + path
        wait: float | None = None
        async with session.slots:
            self.stats["requests"] += 1
            try:
                response = await session.client.post(url, json=payload)
            except httpx.TimeoutException:
                return "timeout", f"no answer within {cfg.timeout:g}s", None
            except httpx.TransportError as exc:
                return "connection", f"connection error ({type(exc).__name__}{_colon(exc)})", None
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                return body
            return "bad_response", "HTTP 200 with a body that is not a JSON object", None
        if status == 429 or status >= 500:
            wait = _retry_after(response.headers.get("retry-after"))
            return ("http_429" if status == 429 else "http_5xx"), f"HTTP {status} {response.reason_phrase}".strip(), wait
        detail = self._scrub(_error_detail(response))
        hint = " (check --api-key-env)" if status in (401, 403) else ""
        raise ServerRejected(f"server {self.base_url} rejected {path}: HTTP {status}: {detail[:300]}{hint}",
                             status, detail)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry `attempt + 1`: the server's Retry-After (capped), else
        exponential backoff with full jitter."""
        cfg = self.config
        if retry_after is None:
            retry_after = random.uniform(0, min(cfg.backoff_max, cfg.backoff_base * 2 ** attempt))
        return min(retry_after, cfg.retry_after_max)

    def _scrub(self, text: str) -> str:
        secrets = [self._api_key, self._basic_auth[1] if self._basic_auth else None]
        for secret in filter(None, secrets):
            text = text.replace(secret, "<redacted>")
        return mask_text(text)


def normalize_base_url(url: str) -> str:
    """Strip the trailing slash; a bare `http://host:port` gets the usual `/v1`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--base-url '{mask_url(url)}' is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
    url = url.rstrip("/")
    return url if parts.path.strip("/") else url + "/v1"


without_password = mask_url  # the older name: the URL with its credentials masked, fit for messages
def read_api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable (which must be set), else OPENAI_API_KEY."""
    if env_name:
        key = os.environ.get(env_name)
        if not key:
            raise UserError(f"--api-key-env {env_name}: that environment variable is not set")
        return key
    return os.environ.get("OPENAI_API_KEY") or None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("detail", "message", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)


def _colon(exc: BaseException) -> str:
    return f": {exc}" if str(exc) else ""


async def gather_or_cancel(coros) -> list:
    """gather(), but the first failure cancels the rest instead of leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def run_sync(coro: Awaitable):
    """Run a coroutine from synchronous code, also when the caller already has an event loop
    (a notebook): then it runs on a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
