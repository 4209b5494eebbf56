"""`llm-teach serve` of SmolLM2: a real server subprocess that answers and stops without leftovers."""

from __future__ import annotations

import signal
import subprocess

import httpx
import pytest

from conftest import CLI, ROOT
from fault_server import free_port, wait_group_gone


@pytest.mark.server
@pytest.mark.slow
def test_serve_transformers_answers_and_stops_on_ctrl_c(smollm2_dir):
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "smollm2-135m", "--engine", "transformers", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        first = proc.stdout.readline()
        assert first.startswith("starting transformers (from this environment)"), first
        ready = proc.stdout.readline()
        assert ready.startswith("ready:"), ready
        base_url, model = ready.split()[3], ready.split()[5]
        assert base_url == f"http://127.0.0.1:{port}/v1" and model == smollm2_dir
        server_pid = int(ready.split("server pid ")[1].split(";")[0])

        listed = httpx.get(f"{base_url}/models", timeout=10).json()["data"]
        assert [m["id"] for m in listed] == [model]  # stock transformers serve lists the hub cache instead
        texts = []
        for seed in (1, 2):
            response = httpx.post(f"{base_url}/chat/completions", timeout=120, json={
                "model": model, "messages": [{"role": "user", "content": "What is 2 + 3?"}],
                "max_tokens": 12, "temperature": 1.0, "seed": seed})
            assert response.status_code == 200, response.text
            texts.append(response.json()["choices"][0]["message"]["content"])
        assert texts[0] and texts[0] != texts[1]  # temperature > 0 samples (stock: greedy for this model)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0
    assert wait_group_gone(server_pid) == []
