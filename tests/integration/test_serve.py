"""`llm-teach serve`: a busy port, an unknown spec or engine, the engine choice.

A real server subprocess answering and stopping without leftovers is tests/slow/test_serve.py
(the transformers engine); the vllm engine (from .venv-vllm) is started the same way by the
`vllm_server` fixture of tests/slow/test_vllm_backend.py, whose teardown checks the same clean
shutdown.
"""

from __future__ import annotations

import os
import socket

import pytest

from conftest import run_cli
from fault_server import free_port
from llm_teach.cli import serve as serve_cli
from llm_teach.errors import UserError


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
