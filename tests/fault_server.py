"""A deliberately unreliable OpenAI-compatible server for the fault-handling tests.

It answers `/v1/chat/completions` and `/v1/completions` with a correct, deterministic completion
(the sum of the chain_sum problem found in the prompt, in `\\boxed{}`, tagged with the seed
that produced it), except when its seeded fault pattern says to fail instead: HTTP 500, HTTP 429
with `Retry-After`, an answer slower than the client's timeout, or a dropped connection.

The pattern is a function of (request content, how often that exact request was seen), not of
arrival order, so it is the same under any concurrency; at most `max_faults_per_key` faults hit
one request, so a client with more retries than that always gets through. Every injected fault
is counted, and the test compares those counts with the retries the client reports.

Also small helpers for the tests that start real servers: a free port, and whether a server's
process group is really gone after shutdown.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULTS = ("http_500", "http_429", "slow", "drop")
_PROBLEM = re.compile(r"problem:\s*([-+\d\s]+?)\s*=")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for real server subprocesses)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are still running (zombies waiting for init to reap
    them hold nothing and do not count). Linux /proc."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def wait_group_gone(pgid: int, timeout: float = 15.0) -> list[int]:
    """Poll until no process of group `pgid` runs; returns what is still alive at the deadline."""
    deadline = time.time() + timeout
    while (live := live_group_members(pgid)) and time.time() < deadline:
        time.sleep(0.2)
    return live


def solve(text: str) -> str:
    """The answer to the chain_sum problem embedded in a prompt ('? ' if there is none)."""
    found = _PROBLEM.search(text)
    if not found:
        return "?"
    return str(sum(int(term.replace(" ", "")) for term in re.findall(r"[-+]?\s*\d+", found.group(1))))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent clients connect at once; the default backlog is 5


@dataclass(eq=False)
class FaultServer:
    """Run with `with FaultServer(...) as server:`; `server.base_url` ends in /v1."""

    seed: int = 0  # of the fault pattern
    fault_rate: float = 0.5  # chance that an attempt at a request fails
    max_faults_per_key: int = 3  # attempts at one request that may fail; later ones are answered
    slow_seconds: float = 5.0  # how late a "slow" answer comes
    retry_after: str = "1"  # the Retry-After header of a 429
    honour_n: bool = True  # false: one choice whatever `n` asks for (a server that ignores n)
    always_status: int | None = None  # answer every request with this HTTP status instead

    def __post_init__(self) -> None:
        self.injected: Counter[str] = Counter()  # fault kind -> times injected
        self.answered: Counter[str] = Counter()  # request key -> successful answers
        self.authorization: set[str] = set()
        self.events: list[tuple[float, str, str]] = []  # (time, key, what happened)
        self.in_flight = self.max_in_flight = 0  # requests being handled at once: now, and the most seen
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FaultServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- decisions -------------------------------------------------------------------------
    def decide(self, key: str) -> str | None:
        """The fault for this attempt at `key`, or None to answer properly."""
        with self._lock:
            attempt = self._seen[key]
            self._seen[key] += 1
        if attempt >= self.max_faults_per_key:
            return None
        rng = random.Random(f"{self.seed}|{key}|{attempt}")
        return rng.choice(FAULTS) if rng.random() < self.fault_rate else None

    def completion(self, body: dict) -> dict:
        chat = "messages" in body
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        answer, seed = solve(text), int(body.get("seed") or 0)
        n = int(body.get("n") or 1) if self.honour_n else 1
        choices = []
        for i in range(n):
            content = f"The sum is {answer}, so the answer is \\boxed{{{answer}}}. [seed {seed + i}]"
            choice = {"index": i, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": content}} if chat else {"text": content})
            choices.append(choice)
        return {"id": "fault-1", "object": "chat.completion" if chat else "text_completion",
                "model": body.get("model"), "choices": choices,
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 12 * n,
                          "total_tokens": len(text.split()) + 12 * n}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                server.authorization.add(self.headers.get("authorization", ""))
                if server.always_status is not None:
                    return self._send(server.always_status, {"error": {"message": "always failing"}})
                key = json.dumps(body, sort_keys=True)
                fault = server.decide(key)
                with server._lock:
                    server.events.append((time.monotonic(), key, fault or "ok"))
                    if fault:
                        server.injected[fault] += 1
                if fault == "http_500":
                    return self._send(500, {"error": {"message": "injected 500"}})
                if fault == "http_429":
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": server.retry_after})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                with server._lock:
                    if fault is None:
                        server.answered[key] += 1
                self._send(200, server.completion(body))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        return Handler
