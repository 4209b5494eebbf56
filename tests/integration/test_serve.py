"""`llm-teach serve`: a real server subprocess that answers and stops without leftovers.

The transformers engine is tested here; the vllm engine (from .venv-vllm) is started the same
way by the `vllm_server` fixture of test_vllm_backend.py, whose teardown checks the same
clean shutdown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import httpx
import pytest

from conftest import CLI, ROOT, run_cli
from fault_server import free_port, wait_group_gone

from llm_teach.cli import serve as serve_cli
from llm_teach.errors import UserError


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


def test_serve_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_cli("serve", "tiny-random", "--engine", "transformers", "--port", busy.getsockname()[1])
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot listen on 127.0.0.1:") and len(result.stderr.splitlines()) == 1


def test_serve_unknown_spec_and_engine_are_one_line():
    result = run_cli("serve", "no/such/dir/model", "--port", str(free_port()))
    assert result.returncode == 2 and "unknown model spec" in result.stderr
    result = run_cli("serve", "tiny-random", "--engine", "sglang", "--port", str(free_port()))
    assert result.returncode == 2 and "--engine must be one of" in result.stderr


def test_engine_choice(monkeypatch, tiny_model_dir):
    monkeypatch.setattr(serve_cli, "find_vllm", lambda: None)
    with pytest.raises(UserError, match="make vllm-env"):
        serve_cli.build_command("tiny-random", tiny_model_dir, engine="vllm", host="127.0.0.1", port=1)
    fallback = serve_cli.build_command("tiny-random", tiny_model_dir, engine="auto", host="127.0.0.1", port=1)
    assert fallback.engine == "transformers" and fallback.served_name == tiny_model_dir

    monkeypatch.setattr(serve_cli, "find_vllm", lambda: ("/venv/bin/python", "/venv", True))
    command = serve_cli.build_command("tiny-random", tiny_model_dir, engine="auto", host="127.0.0.1", port=1,
                                      dtype="float32", max_model_len=2048, extra=["--max-num-seqs", "8"])
    assert command.engine == "vllm" and command.served_name == "tiny-random"
    assert command.argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" in command.argv and command.argv[-2:] == ["--max-num-seqs", "8"]
    assert command.env["VLLM_CPU_KVCACHE_SPACE"] == os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")
