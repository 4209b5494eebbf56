"""Rollout speed: the hf backend vs one batched `model.generate` and a naive per-prompt loop;
the vllm backend vs vLLM's own `LLM.generate`.

Workload (issue 13): 16 chat prompts (rg:chain_sum through eval/boxed.jinja) x 4 samples x 64
new tokens at temperature 1, SmolLM2-135M. The peers get exactly the token ids the backend
encodes, left-padded like the backend pads them:

* batched: one `model.generate` over all 64 rows (the fastest plain transformers call);
* batched_static: the same on transformers' static KV cache (`cache_implementation="static"`);
* naive: one `model.generate(num_return_sequences=4)` per prompt;
* LLM.generate: vLLM's own call with `SamplingParams(n=4)`, no record building.

Alternations are paired: every repeat times each contender once, in a rotated order, and the
ratio of that repeat is taken before the median, so load that comes and goes on a shared
machine hits both sides of a ratio alike. Prints `RATIO name value` lines (value = peer seconds
/ our seconds, i.e. our speed-up; > 1 means ours is faster) and, with --write, records the
table in benchmarks/RESULTS.md.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/rollout.py --write                 # hf, fp32 + bf16
    PYTHONPATH=$PWD .venv-vllm/bin/python benchmarks/rollout.py --vllm --write     # vllm
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import record  # noqa: E402
from bench_openai_throughput import build_prompts, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"


def paired(contenders: dict, repeats: int, clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each contender per repeat, in an order rotated every repeat. `clock` is wall time
    by default; `time.process_time` (this process's CPU time, all threads) when another job shares
    the cores, since the other job then stretches wall time unevenly between contenders."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            started = clock()
            contenders[name]()
            times[name].append(clock() - started)
            print(f"  rep {rep} {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def ratios(times: dict[str, list[float]], ours: str) -> dict[str, float]:
    """Median over repeats of peer seconds / our seconds (paired per repeat)."""
    return {peer: statistics.median(p / o for p, o in zip(times[peer], times[ours]))
            for peer in times if peer != ours}


def hf_contenders(dtype: str, prompts, n: int, max_new: int) -> dict:
    import torch

    from llm_teach.backends.base import SamplingConfig, encode_prompt
    from llm_teach.backends.hf import HFBackend, HFConfig

    backend = HFBackend(MODEL, HFConfig(dtype=dtype, device="cpu"))
    lm, tok = backend.lm, backend.tokenizer
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=max_new, seed=0)
    encoded = [encode_prompt(tok, p) for p in prompts]
    pad = tok.pad_token_id
    kwargs = dict(max_new_tokens=max_new, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=pad)

    def left_padded(rows):
        width = max(map(len, rows))
        return (torch.tensor([[pad] * (width - len(r)) + r for r in rows]),
                torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]))

    @torch.no_grad()
    def batched():
        ids, mask = left_padded([e for e in encoded for _ in range(n)])
        lm.generate(input_ids=ids, attention_mask=mask, **kwargs)

    @torch.no_grad()
    def batched_static():  # the same call on transformers' static (preallocated) KV cache
        ids, mask = left_padded([e for e in encoded for _ in range(n)])
        lm.generate(input_ids=ids, attention_mask=mask, cache_implementation="static", **kwargs)

    @torch.no_grad()
    def naive():
        for e in encoded:
            lm.generate(input_ids=torch.tensor([e]), num_return_sequences=n, **kwargs)

    def warm_up():  # first-call costs (allocator, kernels, stop/cache set-up) on a small call of each kind
        short = SamplingConfig(temperature=1.0, max_new_tokens=4, seed=0)
        backend.generate(prompts[:2], 2, short)
        with torch.no_grad():
            for cache in ("dynamic", "static"):
                lm.generate(input_ids=torch.tensor([encoded[0]]), **{**kwargs, "max_new_tokens": 4},
                            cache_implementation=cache)

    return {"ours": lambda: backend.generate(prompts, n, sampling), "batched": batched, "batched_static": batched_static,
            "naive": naive}, warm_up


def vllm_contenders(dtype: str, prompts, n: int, max_new: int) -> dict:
    from llm_teach.backends.base import SamplingConfig, encode_prompt
    from llm_teach.backends.vllm import VLLMBackend, VLLMConfig

    backend = VLLMBackend(MODEL, VLLMConfig(dtype=dtype, max_model_len=1024, max_num_batched_tokens=16384))
    vllm = backend._vllm
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=max_new, seed=0)
    token_prompts = [vllm.TokensPrompt(prompt_token_ids=encode_prompt(backend.tokenizer, p)) for p in prompts]
    params = vllm.SamplingParams(n=n, temperature=1.0, top_p=1.0, max_tokens=max_new, seed=0)
    contenders = {"ours": lambda: backend.generate(prompts, n, sampling),
                  "LLM.generate": lambda: backend.llm.generate(token_prompts, params, use_tqdm=False)}
    return contenders, lambda: [fn() for fn in contenders.values()]


def run(kind: str, dtypes: list[str], args) -> list[str]:
    prompts = build_prompts(args.prompts)
    rows = []
    for dtype in dtypes:
        make = vllm_contenders if kind == "vllm" else hf_contenders
        contenders, warm_up = make(dtype, prompts, args.samples, args.max_new_tokens)
        if args.peers:
            contenders = {k: v for k, v in contenders.items() if k == "ours" or k in args.peers.split(",")}
        warm_up()  # first-call costs are no one's speed
        times = paired(contenders, args.repeats, time.process_time if args.cpu_time else time.perf_counter)
        for peer, value in ratios(times, "ours").items():
            name = f"{kind}_{dtype}_vs_{peer.replace('.', '_')}"
            print(f"RATIO {name} {value:.3f}", flush=True)
            medians = " / ".join(f"{statistics.median(times[c]):.2f}" for c in ("ours", peer))
            rows.append(f"| {kind} {dtype} | {peer} | {medians} | {value:.2f}x |")
    return rows


def write(section_rows: list[str], kind: str, load_start: float, command: str, repeats: int, cpu_time: bool) -> None:
    clock = ("CPU seconds of the benchmark process (`--cpu-time`; torch threads: "
             f"{os.environ.get('OMP_NUM_THREADS', 'default')})" if cpu_time else "wall seconds")
    body = (f"## Rollouts: {kind} backend vs its peers (issue 13)\n\n"
            f"Machine: {machine()}; load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end "
            f"(a shared machine, other engineers' jobs running: read the paired ratios, not the seconds). "
            f"Times are {clock}.\n"
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}); {repeats} paired alternations, medians.\n\n"
            "| backend, dtype | peer | median s ours / peer | speed-up (median of paired peer/ours) |\n"
            "|---|---|---:|---:|\n" + "\n".join(section_rows))
    record(f"rollout_{kind}", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm", action="store_true", help="measure the vllm backend (run inside .venv-vllm)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", default="", help="only these peers, comma-separated (default: all), "
                                                   "e.g. batched when the machine is too loaded for the naive loop")
    parser.add_argument("--cpu-time", action="store_true", help="time with this process's CPU time instead of "
                        "wall time (when another job shares the cores; run with OMP_NUM_THREADS=1)")
    parser.add_argument("--write", action="store_true", help="record the table in benchmarks/RESULTS.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    kind = "vllm" if args.vllm else "hf"
    rows = run(kind, args.dtypes.split(","), args)
    print("\n".join(rows))
    if args.write:
        write(rows, kind, load_start, "python benchmarks/rollout.py " + " ".join(sys.argv[1:]), args.repeats,
              args.cpu_time)


if __name__ == "__main__":
    main()
