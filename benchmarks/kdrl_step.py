"""KDRL step time / GRPO step time: what the teacher costs on top of an RL step.

Student `smollm2-135m?layers=12` (12 of SmolLM2-135M's 30 layers), teacher SmolLM2-135M (all
30 layers: 2.5x the student's depth), rg:chain_sum prompts, 32 new tokens, temperature 1, a
batch of 16 completions per step split into groups of G generations per prompt (G = 2, 4, 16:
GRPO refuses G = 1, a group of one has no advantage). Both methods run through `llm-teach
train` (`llm_teach.trainers.train`) with the same config; a callback times every optimizer
step and the first one (warm-up: allocator, first-call costs) is dropped. Alternations are
paired (GRPO then KDRL, then KDRL then GRPO, ...): the ratio of medians of one alternation is
taken before the median over alternations.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/kdrl_step.py --write
    # teacher served by vLLM (a server from .venv-vllm, started here by `llm-teach serve`):
    PYTHONPATH=$PWD .venv/bin/python benchmarks/kdrl_step.py --teacher-backend openai --generations 4 --write

Prints `RATIO kdrl_over_grpo_gG value` (KDRL seconds per step / GRPO seconds per step).
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
from results_md import record  # noqa: E402
from bench_openai_throughput import _free_port, machine, served  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


CLOCK = time.perf_counter  # main() sets time.process_time with --cpu-time


def step_seconds(method: str, values: dict) -> list[float]:
    """Seconds of every optimizer step after the first of one `train()` run (wall, or this
    process's CPU time with --cpu-time: the hf teacher runs in this process, so its cost counts)."""
    from transformers import TrainerCallback

    from llm_teach.trainers import train

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.started = CLOCK()

        def on_step_end(self, *_, **__):
            times.append(CLOCK() - self.started)

    with tempfile.TemporaryDirectory() as out:
        train(method, values, out, callbacks=[Clock()])
    return times[1:]


def configs(g: int, steps: int, teacher: dict) -> tuple[dict, dict]:
    grpo = {"model": "smollm2-135m?layers=12", "data": "rg:chain_sum", "limit": 64, "max_steps": steps,
            "num_generations": g, "per_device_train_batch_size": 16, "max_completion_length": 32,
            "temperature": 1.0, "learning_rate": 1e-6, "save_steps": 10_000, "logging_steps": 1}
    return grpo, {**grpo, "teacher": "smollm2-135m", **teacher}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", default="2,4,16")
    parser.add_argument("--alternations", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--teacher-backend", default="hf", choices=("hf", "openai"))
    parser.add_argument("--cpu-time", action="store_true", help="time steps with this process's CPU time (hf "
                        "teacher only: a served teacher's CPU is another process's) when another job shares the cores")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.cpu_time:
        if args.teacher_backend != "hf":
            parser.error("--cpu-time needs --teacher-backend hf (a served teacher's CPU time is not this process's)")
        global CLOCK
        CLOCK = time.process_time
    load_start = os.getloadavg()[0]
    rows = []
    server = served("vllm", _free_port()) if args.teacher_backend == "openai" else None
    teacher = {}
    if server is not None:
        base_url, name = server.__enter__()
        teacher = {"teacher_backend": "openai", "teacher_base_url": base_url, "teacher": name}
    try:
        for g in (int(x) for x in args.generations.split(",")):
            grpo, kdrl = configs(g, args.steps, teacher)
            if server is not None:
                kdrl["teacher"] = teacher["teacher"]
            per_alt, medians = [], {"grpo": [], "kdrl": []}
            for alt in range(args.alternations):
                order = [("grpo", grpo), ("kdrl", kdrl)][:: 1 if alt % 2 == 0 else -1]
                got = {m: statistics.median(step_seconds(m, v)) for m, v in order}
                per_alt.append(got["kdrl"] / got["grpo"])
                for m in got:
                    medians[m].append(got[m])
                print(f"  G={g} alternation {alt}: grpo {got['grpo']:.2f} s/step, kdrl {got['kdrl']:.2f}", flush=True)
            ratio = statistics.median(per_alt)
            print(f"RATIO kdrl_over_grpo_{args.teacher_backend}_g{g} {ratio:.3f}", flush=True)
            rows.append(f"| {args.teacher_backend} | {g} | {16 // g} | {statistics.median(medians['grpo']):.2f} | "
                        f"{statistics.median(medians['kdrl']):.2f} | {ratio:.2f}x |")
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    print("\n".join(rows))
    if args.write:
        write(rows, args, load_start)


def write(rows: list[str], args, load_start: float) -> None:
    kind = args.teacher_backend
    body = (f"## KDRL step / GRPO step, teacher through {kind} (issue 13)\n\n"
            f"Machine: {machine()}; load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end (shared "
            f"machine, other engineers' jobs running: read the paired ratios). Times are "
            f"{'CPU seconds of the process (--cpu-time), OMP_NUM_THREADS=' + os.environ.get('OMP_NUM_THREADS', 'default') if args.cpu_time else 'wall seconds'}.\n"
            f"Command: `python benchmarks/kdrl_step.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}); "
            f"{args.alternations} paired alternations of {args.steps} steps (first step untimed), medians.\n\n"
            "| teacher backend | generations/prompt | prompts/step | GRPO s/step | KDRL s/step | KDRL / GRPO |\n"
            "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    record(f"kdrl_step_{kind}", body)


if __name__ == "__main__":
    main()
