"""Throughput of the openai backend against real servers, relative to the hf backend in-process.

What it answers: on this machine, how much faster (or slower) is generating through a teacher
server than through transformers in the same process, and how much does `--max-concurrency`
buy on each server? Every server is started with `llm-teach serve` (the same command a user
runs), every backend gets the same greedy chat prompts (reasoning-gym chain_sum through the eval
template), all in float32, and completion tokens are counted by re-tokenizing the completions
with the model's tokenizer so servers that count EOS differently are comparable.

    .venv/bin/python benchmarks/bench_openai_throughput.py                 # print a table
    .venv/bin/python benchmarks/bench_openai_throughput.py --write         # also update RESULTS.md

The servers, the client and the hf backend share the machine's cores: on a small CPU box the
numbers say as much about contention as about the engines. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


@dataclass
class Measurement:
    backend: str  # "hf (in-process)" or "openai -> ENGINE"
    concurrency: int | None
    seconds: float
    requests: int
    tokens: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def build_prompts(count: int) -> list:
    from llm_teach.data import load_problems
    from llm_teach.prompts import render

    problems = load_problems("rg:chain_sum", count, split="test")
    return [[{"role": "user", "content": render("eval/boxed.jinja", question=p.question)}] for p in problems]


def count_tokens(tokenizer, generations) -> int:
    return sum(len(tokenizer(g.completion, add_special_tokens=False)["input_ids"]) for gens in generations for g in gens)


def measure_hf(prompts, sampling, tokenizer, batch_size: int) -> Measurement:
    from llm_teach.backends.hf import HFBackend, HFConfig

    backend = HFBackend("smollm2-135m", HFConfig(dtype="float32", device="cpu", batch_size=batch_size))
    backend.generate(prompts[:1], 1, sampling)  # warm-up
    started = time.perf_counter()
    out = backend.generate(prompts, 1, sampling)
    return Measurement("hf (in-process)", None, time.perf_counter() - started, len(prompts), count_tokens(tokenizer, out))


def measure_openai(engine: str, base_url: str, model: str, prompts, sampling, tokenizer, concurrency: int) -> Measurement:
    from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig

    backend = OpenAIBackend(model, OpenAIConfig(base_url=base_url, max_concurrency=concurrency))
    started = time.perf_counter()
    out = backend.generate(prompts, 1, sampling)
    seconds = time.perf_counter() - started
    assert sum(backend.stats["retries"].values()) == 0, backend.stats
    return Measurement(f"openai -> {engine}", concurrency, seconds, len(prompts), count_tokens(tokenizer, out))


@contextmanager
def served(engine: str, port: int) -> Iterator[tuple[str, str]]:
    """`llm-teach serve smollm2-135m --engine ENGINE`; yields (base_url, served model name)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    argv = [sys.executable, "-m", "llm_teach", "serve", "smollm2-135m", "--engine", engine, "--port", str(port),
            "--dtype", "float32"] + (["--max-model-len", "2048"] if engine == "vllm" else [])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("ready:"):
                words = line.split()
                yield words[3], words[5]
                return
        raise RuntimeError(f"llm-teach serve --engine {engine} exited before it was ready")
    finally:
        proc.terminate()
        proc.wait(60)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    memory = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, no GPU" if not _has_cuda() else f"{os.cpu_count()} cores, CUDA"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def table(rows: list[Measurement], reference: Measurement) -> str:
    lines = ["| backend | concurrency | requests/s | tokens/s | req/s vs hf mean | tok/s vs hf mean |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in rows:
        lines.append(f"| {m.backend} | {m.concurrency or '-'} | {m.requests_per_s:.2f} | {m.tokens_per_s:.1f} | "
                     f"{m.requests_per_s / reference.requests_per_s:.2f}x | {m.tokens_per_s / reference.tokens_per_s:.2f}x |")
    return "\n".join(lines)


def write_results(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md (between its markers), keeping the rest."""
    from results_md import record

    record("bench_openai_throughput", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--engines", default="transformers,vllm", help="servers to measure (vllm needs .venv-vllm)")
    parser.add_argument("--hf-batch-size", type=int, default=16)
    parser.add_argument("--write", action="store_true", help=f"update {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()

    from llm_teach.backends.base import SamplingConfig
    from llm_teach.cli.serve import find_vllm
    from llm_teach.models import load_tokenizer

    load_average = os.getloadavg()[0]
    prompts = build_prompts(args.prompts)
    tokenizer = load_tokenizer("smollm2-135m")
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=args.max_new_tokens)
    levels = [int(c) for c in args.concurrency.split(",")]
    before = measure_hf(prompts, sampling, tokenizer, args.hf_batch_size)
    print(f"hf before: {before.tokens_per_s:.1f} tok/s", flush=True)
    rows = []
    for engine in args.engines.split(","):
        if engine == "vllm" and find_vllm() is None:
            print("skipping vllm: not installed here and no .venv-vllm", file=sys.stderr)
            continue
        with served(engine, _free_port()) as (base_url, model):
            measure_openai(engine, base_url, model, prompts[:2], sampling, tokenizer, 2)  # warm-up
            for level in levels:
                rows.append(measure_openai(engine, base_url, model, prompts, sampling, tokenizer, level))
                m = rows[-1]
                print(f"{m.backend} concurrency {m.concurrency}: {m.requests_per_s:.2f} req/s, "
                      f"{m.tokens_per_s:.1f} tok/s", flush=True)
    # hf is measured before and after the servers; the ratios use the mean of the two, so a
    # change in background load during the run shows up as a gap between them.
    after = measure_hf(prompts, sampling, tokenizer, args.hf_batch_size)
    before.backend, after.backend = "hf (in-process), before", "hf (in-process), after"
    reference = Measurement("hf mean", None, (before.seconds + after.seconds) / 2, before.requests,
                            (before.tokens + after.tokens) // 2)
    result = table([before, after, *rows], reference)
    command = "python benchmarks/bench_openai_throughput.py " + " ".join(sys.argv[1:])
    section = (f"## openai backend throughput vs hf in-process\n\n"
               f"Machine: {machine()}; load average {load_average:.1f} at start, {os.getloadavg()[0]:.1f} at end "
               f"(other jobs share the cores: compare ratios within one run, not across runs).\n"
               f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}).\n"
               f"Workload: {len(prompts)} greedy chat prompts (rg:chain_sum, eval/boxed.jinja), "
               f"{args.max_new_tokens} new tokens max, SmolLM2-135M-Instruct in float32 everywhere; "
               f"hf batch size {args.hf_batch_size}; servers started by `llm-teach serve`.\n\n{result}\n\n"
               f"Reading it: `transformers serve` (without --continuous-batching) generates one request at a "
               f"time, so concurrency cannot help it and every request pays batch-1 decoding; vLLM batches "
               f"whatever is in flight, so `--max-concurrency` is what turns a vLLM teacher into throughput. "
               f"Against hf, the in-process backend batches {args.hf_batch_size} prompts per forward pass.\n")
    print("\n" + section)
    if args.write:
        write_results(section)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
