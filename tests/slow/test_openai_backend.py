"""The openai backend against a real `transformers serve` of SmolLM2.

`transformers serve` is started once for the module (stock, as a user would run it): it
ignores `n` and cannot return prompt log-probs, which is exactly what the backend must cope
with (fan out) or refuse clearly (score).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from fault_server import free_port
from integration.test_openai_backend import _read
from llm_teach.backends.base import SamplingConfig
from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig
from llm_teach.errors import UserError

pytestmark = pytest.mark.slow  # every test here loads the real SmolLM2-135M


@pytest.fixture(scope="module")
def tserve(smollm2_dir, tmp_path_factory):
    """Stock `transformers serve` on 127.0.0.1 with the converted SmolLM2; yields (base_url, model)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("tserve") / "server.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", smollm2_dir,
                             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, f"transformers serve exited early; see {log.name}"
            assert time.time() < deadline, f"transformers serve did not start; see {log.name}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", smollm2_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.mark.server
@pytest.mark.slow
def test_eval_openai_writes_items_like_hf(tserve, tmp_path):
    base_url, model = tserve
    # Short generations (the content is not under test): `transformers serve` answers one request at a time.
    common = ["--benchmark", "rg:chain_sum", "--samples", "2", "--max-new-tokens", "12"]
    result = run_cli("eval", "--backend", "openai", "--base-url", base_url, "--model", model, "--limit", "4",
                     *common, "--out", tmp_path / "openai")
    assert result.returncode == 0, result.stderr
    items = _read(tmp_path / "openai", "items.jsonl")
    assert len(items) == 4 and all(len(it["completions"]) == 2 for it in items)
    assert all(r in ("stop", "length") for it in items for r in it["finish_reasons"])
    # The same kind of summary as the in-process backend (fewer problems: only keys matter here).
    hf = run_cli("eval", "--backend", "hf", "--model", "smollm2-135m", "--limit", "2", *common,
                 "--max-new-tokens", "8", "--out", tmp_path / "hf")
    assert hf.returncode == 0, hf.stderr
    summary, hf_summary = _read(tmp_path / "openai", "summary.json"), _read(tmp_path / "hf", "summary.json")
    assert summary.keys() == hf_summary.keys()
    assert summary["n"] == 4 and summary["backend"] == "openai" and summary["model"] == model
    stats = _read(tmp_path / "openai", "manifest.json")["backend_stats"]
    # transformers serve ignores `n`: one fan-out request per problem, detected on the first.
    assert stats["server_ignores_n"] is True
    assert stats["fan_out_requests"] == 4 and stats["requests"] == 8
    assert stats["completion_tokens"] > 0 and sum(stats["retries"].values()) == 0


@pytest.mark.server
@pytest.mark.slow
def test_generate_plain_prompts_stop_strings_and_fan_out(tserve):
    base_url, model = tserve
    backend = OpenAIBackend(model, OpenAIConfig(base_url=base_url))
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=12, stop=[","])
    out = backend.generate(["1, 2, 3, 4,", "Count: one, two,"], 2, sampling)  # plain text -> /completions
    assert [len(gens) for gens in out] == [2, 2]
    for gens in out:
        for g in gens:
            assert g.backend == "openai" and g.model == model and g.finish_reason in ("stop", "length")
            assert g.token_ids is None and g.logprobs is None  # transformers serve returns neither
    # transformers serve keeps the stop string in its text; the backend cuts it, as OpenAI does.
    assert all(g.completion == " 5" and g.finish_reason == "stop" for g in out[0]), out[0]
    assert backend.stats["server_ignores_n"] is True and backend.stats["fan_out_requests"] == 2


@pytest.mark.server
@pytest.mark.slow
def test_score_against_transformers_serve_fails_clearly(tserve):
    base_url, model = tserve
    backend = OpenAIBackend(model, OpenAIConfig(base_url=base_url))
    with pytest.raises(UserError) as error:
        backend.score([[{"role": "user", "content": "What is 1 + 1?"}]], ["2"])
    message = str(error.value)
    assert base_url in message and "does not return prompt log-probs" in message and "vLLM" in message
    assert backend.stats["requests"] == 1  # one probe, no batch sent


@pytest.mark.server
@pytest.mark.slow
def test_rejected_request_is_not_retried(tserve):
    base_url, _ = tserve
    backend = OpenAIBackend("no-such-model", OpenAIConfig(base_url=base_url))
    with pytest.raises(UserError, match=r"rejected /chat/completions: HTTP 400"):
        backend.generate([[{"role": "user", "content": "hi"}]], 1, SamplingConfig(max_new_tokens=4))
    assert backend.stats["requests"] == 1


def test_prompts_are_encoded_with_special_tokens_once(smollm2_dir):
    """Every backend encodes through base.encode_prompt: a chat is its rendered template (which
    already holds the special tokens, so none are added again), a plain string gets them added."""
    from llm_teach.backends.base import encode_prompt
    from llm_teach.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert encode_prompt(tokenizer, chat) == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(encode_prompt(tokenizer, chat)) == rendered
    assert encode_prompt(tokenizer, "Plain text prompt") == tokenizer("Plain text prompt")["input_ids"]
