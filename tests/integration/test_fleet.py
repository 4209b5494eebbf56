"""A teacher fleet of two real `llm-teach serve` servers (tiny-random), one killed mid-run: the
run completes on the other, every problem answered once and as a single server answers it;
a fleet that is all down stops with one line, exit 2, nothing finalized."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import CLI, ROOT, run_cli
from fault_server import free_port, wait_group_gone

EVAL = ["--benchmark", "rg:chain_sum", "--limit", "16", "--max-new-tokens", "6", "--max-concurrency", "2",
        "--timeout", "60"]


class Served:
    """`llm-teach serve tiny-random --engine transformers` in a subprocess; `kill()` SIGKILLs
    the server process group (as a crash would), `stop()` is the clean Ctrl-C."""

    def __init__(self):
        self.proc = subprocess.Popen([*CLI, "serve", "tiny-random", "--engine", "transformers", "--port",
                                      str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)

    def ready(self) -> "Served":
        self.proc.stdout.readline()  # "starting ..."
        line = self.proc.stdout.readline()
        assert line.startswith("ready:"), line
        self.base_url, self.model = line.split()[3], line.split()[5]
        self.server_pid = int(line.split("server pid ")[1].split(";")[0])
        return self

    def kill(self) -> None:
        os.killpg(self.server_pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)
        assert wait_group_gone(self.server_pid) == []


@pytest.fixture(scope="module")
def two_servers():
    servers = [Served(), Served()]
    try:
        yield [s.ready() for s in servers]
    finally:
        for s in servers:
            s.stop()


def _items(out):
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


@pytest.mark.server
def test_one_server_killed_mid_run_loses_and_duplicates_nothing(tmp_path, two_servers):
    a, b = two_servers
    ref = run_cli("eval", "--backend", "openai", "--base-url", a.base_url, "--model", a.model, *EVAL,
                  "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "fleet"
    run = subprocess.Popen([*CLI, "eval", "--backend", "openai", "--base-url", a.base_url, "--base-url", b.base_url,
                            "--model", a.model, *EVAL, "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    part = out / "items.jsonl.part"
    deadline = time.time() + 300
    while not (part.exists() and part.read_text().strip()) and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before a server could be killed mid-run"
    b.kill()  # after the first chunk: the second one's requests are being sent to both servers
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr

    reference, got = _items(tmp_path / "ref"), _items(out)
    assert [it["id"] for it in got] == [it["id"] for it in reference]  # every problem once, in order
    assert [it["completions"] for it in got] == [it["completions"] for it in reference]  # greedy: same answers
    stats = json.loads((out / "manifest.json").read_text())["backend_stats"]
    first, second = stats["servers"]
    assert (first["server"], second["server"]) == (a.base_url, b.base_url)
    assert first["requests"] > 0 and second["requests"] > second["failures"] > 0  # b answered, then failed
    assert second["taken_out"] >= 1 and first["failures"] == 0
    successes = first["requests"] + second["requests"] - second["failures"]
    assert successes == 16 == stats["requests"] - second["failures"]  # one answer per problem, none twice


def test_all_servers_down_is_one_line_exit_2_nothing_written(tmp_path):
    urls = f"http://127.0.0.1:{free_port()}/v1,http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "down"
    result = run_cli("eval", "--backend", "openai", "--base-url", urls, "--model", "m", *EVAL, "--out", out)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "all 2 servers are down" in result.stderr and "connection error" in result.stderr
    assert not (out / "items.jsonl").exists() and not (out / "summary.json").exists()
