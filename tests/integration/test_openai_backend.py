"""The openai backend against a real `transformers serve` and against a faulty local server.

`transformers serve` is started once for the module (stock, as a user would run it): it
ignores `n` and cannot return prompt log-probs, which is exactly what the backend must cope
with (fan out) or refuse clearly (score). The fault server (tests/fault_server.py) injects
500s, 429s with Retry-After, slow answers and dropped connections in a seeded pattern.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from fault_server import FaultServer, free_port

from llm_teach.backends.base import SamplingConfig
from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig
from llm_teach.errors import UserError


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


def _read(out: Path, name: str):
    text = (out / name).read_text()
    return [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else json.loads(text)


# -- against transformers serve --------------------------------------------------------------
@pytest.mark.server
@pytest.mark.slow
def test_eval_openai_writes_items_like_hf(tserve, tmp_path):
    base_url, model = tserve
    common = ["--benchmark", "rg:chain_sum", "--samples", "2", "--max-new-tokens", "32"]
    result = run_cli("eval", "--backend", "openai", "--base-url", base_url, "--model", model, "--limit", "8",
                     *common, "--out", tmp_path / "openai")
    assert result.returncode == 0, result.stderr
    items = _read(tmp_path / "openai", "items.jsonl")
    assert len(items) == 8 and all(len(it["completions"]) == 2 for it in items)
    assert all(r in ("stop", "length") for it in items for r in it["finish_reasons"])
    # The same kind of summary as the in-process backend (fewer problems: only keys matter here).
    hf = run_cli("eval", "--backend", "hf", "--model", "smollm2-135m", "--limit", "2", *common,
                 "--max-new-tokens", "8", "--out", tmp_path / "hf")
    assert hf.returncode == 0, hf.stderr
    summary, hf_summary = _read(tmp_path / "openai", "summary.json"), _read(tmp_path / "hf", "summary.json")
    assert summary.keys() == hf_summary.keys()
    assert summary["n"] == 8 and summary["backend"] == "openai" and summary["model"] == model
    stats = _read(tmp_path / "openai", "manifest.json")["backend_stats"]
    # transformers serve ignores `n`: one fan-out request per problem, detected on the first.
    assert stats["server_ignores_n"] is True
    assert stats["fan_out_requests"] == 8 and stats["requests"] == 16
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


def test_score_needs_a_tokenizer_spec():
    backend = OpenAIBackend("gpt-nonexistent", OpenAIConfig(base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(UserError, match="--tokenizer"):
        backend.score(["a"], ["b"])


def test_base_url_and_api_key_env(monkeypatch):
    assert OpenAIBackend("m", OpenAIConfig(base_url="http://h:1")).base_url == "http://h:1/v1"
    assert OpenAIBackend("m", OpenAIConfig(base_url="http://h:1/v1/")).base_url == "http://h:1/v1"
    masked = OpenAIBackend("m", OpenAIConfig(base_url="https://u:hunter2@h:1/v1"))
    assert "hunter2" not in masked.base_url + repr(masked) + str(masked.stats)
    with pytest.raises(UserError, match="not an http"):
        OpenAIBackend("m", OpenAIConfig(base_url="h:1"))
    monkeypatch.delenv("LLM_TEACH_TEST_UNSET", raising=False)
    with pytest.raises(UserError, match="LLM_TEACH_TEST_UNSET"):
        OpenAIBackend("m", OpenAIConfig(base_url="http://h:1", api_key_env="LLM_TEACH_TEST_UNSET"))


# -- against the fault server ----------------------------------------------------------------
FAULTY_EVAL = ["--model", "fault-model", "--benchmark", "rg:chain_sum", "--limit", "16", "--samples", "2",
               "--max-new-tokens", "16", "--max-concurrency", "4", "--timeout", "2", "--max-retries", "5"]


@pytest.mark.parametrize("honour_n", [True, False], ids=["native-n", "fan-out"])
def test_faulty_server_every_completion_exactly_once(tmp_path, honour_n):
    with FaultServer(seed=7, fault_rate=0.5, honour_n=honour_n) as server:
        result = run_cli("eval", "--backend", "openai", "--base-url", server.base_url, *FAULTY_EVAL,
                         "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    items = _read(tmp_path, "items.jsonl")
    assert len(items) == 16 and len({it["id"] for it in items}) == 16
    for item in items:
        # Both samples present, each once: seeds 0 and 1 (native n children or fan-out requests).
        tags = sorted(c.rsplit("[seed ", 1)[1] for c in item["completions"])
        assert tags == ["0]", "1]"], item["completions"]
        assert all(item["correct"]), item  # each completion belongs to its own problem
    stats = _read(tmp_path, "manifest.json")["backend_stats"]
    injected = server.injected
    assert sum(injected.values()) >= 8 and all(injected[kind] > 0 for kind in ("http_500", "http_429", "slow", "drop"))
    assert stats["retries"] == {"http_5xx": injected["http_500"], "http_429": injected["http_429"],
                                "timeout": injected["slow"], "connection": injected["drop"], "bad_response": 0}
    assert set(server.answered.values()) == {1}  # no request was answered twice
    assert stats["server_ignores_n"] is (not honour_n)
    assert stats["fan_out_requests"] == (0 if honour_n else 16)


def test_retry_after_is_honoured():
    with FaultServer(seed=1, fault_rate=1.0, max_faults_per_key=1, retry_after="1") as server:
        server.decide = lambda key, _orig=server.decide: "http_429" if _orig(key) else None
        backend = OpenAIBackend("m", OpenAIConfig(base_url=server.base_url, backoff_base=0.001, backoff_max=0.001))
        out = backend.generate(["problem: 2 + 3 ="], 1, SamplingConfig(max_new_tokens=8))
    assert "\\boxed{5}" in out[0][0].completion
    (t429, _, first), (t_ok, _, second) = server.events
    assert (first, second) == ("http_429", "ok")
    assert t_ok - t429 >= 0.9  # waited for Retry-After, not the 1 ms backoff
    assert backend.stats["retries"]["http_429"] == 1


def test_exhausted_retries_one_line_exit_2_nothing_finalized(tmp_path):
    with FaultServer(always_status=503) as server:
        result = run_cli("eval", "--backend", "openai", "--base-url", server.base_url, "--model", "m",
                         "--benchmark", "rg:chain_sum", "--limit", "2", "--max-retries", "2",
                         "--out", tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert server.base_url in lines[0] and "HTTP 503" in lines[0] and "3 attempts" in lines[0]
    assert not (tmp_path / "items.jsonl").exists() and not (tmp_path / "summary.json").exists()


def test_api_key_is_sent_but_never_written(tmp_path):
    secret = "sk-test-secret-123"
    with FaultServer(fault_rate=0.0) as server:
        result = run_cli("eval", "--backend", "openai", "--base-url", server.base_url, "--model", "m",
                         "--api-key-env", "LLM_TEACH_TEST_KEY", "--benchmark", "rg:chain_sum", "--limit", "2",
                         "--out", tmp_path, env={"LLM_TEACH_TEST_KEY": secret})
    assert result.returncode == 0, result.stderr
    assert server.authorization == {f"Bearer {secret}"}
    written = result.stdout + result.stderr + "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert secret not in written


@pytest.mark.parametrize("url, shown", [
    ("http://user:secret@[::1]:8000/v1", "http://user:***@[::1]:8000/v1"),
    ("https://user:secret@Teacher.example/v1", "https://user:***@Teacher.example/v1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
])
def test_credentials_in_the_url_are_masked_wherever_it_is_shown(url, shown):
    from llm_teach.backends.http import without_password

    assert without_password(url) == shown
