"""Peak memory and time of the distillation loss against TRL's two, on the same inputs.

What it answers: with an online teacher, what does one forward+backward of the KD loss cost,
from both models' final hidden states and lm-heads (float32, hidden 576), for ours
(`losses.tiled.TiledDistillLoss`), TRL 1.16's dense `GKDTrainer.generalized_jsd_loss` (both
models' full logits, then the loss) and TRL's chunked `_chunked_divergence_loss` (the
DistillationTrainer's: teacher hidden states + head, flattened rows tiled)? The configurations
are the rows of issue 11's table.

Each (configuration, implementation) runs in a fresh subprocess: peak RSS above the inputs is
`VmHWM` after writing 5 to /proc/self/clear_refs (which resets it) minus `VmRSS` just before
the step (tracemalloc does not see torch's allocator). The first step is the memory one; the
time is the best of `--repeats` further steps, in CPU seconds of the worker process
(`time.process_time`: on a shared machine wall time also counts the other jobs' turns); wall
seconds are printed too. Dense-GKD runs whose estimated peak exceeds `--max-gb` or the memory
available now minus `--leave-gb` are not run and are reported as "over memory".

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kd_loss.py            # RATIO lines and a table
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kd_loss.py --only V49152_4x512_fwd_kl --cache /tmp/kd.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kd_loss.py --cache /tmp/kd.jsonl --write

With `--cache`, each finished (configuration, implementation) is appended to that JSONL file and
not measured again, so the rows can be run one at a time and the table written from all of them.
Ratios are ours / peer (below 1 is better for us); compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- kd_loss:start -->", "<!-- kd_loss:end -->"
HIDDEN = 576
IMPLS = ("ours", "gkd_dense", "trl_chunked")
# (V, B, T, divergence): issue 11's table
CONFIGS = [
    (49152, 4, 512, "fwd_kl"), (49152, 4, 512, "jsd"), (49152, 8, 1024, "fwd_kl"),
    (151936, 4, 512, "fwd_kl"), (151936, 4, 512, "jsd"), (151936, 2, 512, "jsd"),
]
# Dense GKD holds about this many [B*T, V] float32 tensors at its peak (measured: 3.22 GB for
# fwd KL and 6.44 GB for JSD at V=49152, 4x512, i.e. 8 and 16 x 0.40 GB).
DENSE_COPIES = {"fwd_kl": 8, "jsd": 16}


def _status(key: str) -> int:
    """A /proc/self/status field in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _meminfo(key: str) -> int:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _step_fn(impl: str, divergence: str, tile_rows: int):
    """One forward+backward of `impl` from (student hidden, student head, teacher hidden,
    teacher head, mask)."""
    import torch

    beta = 0.0 if divergence == "fwd_kl" else 0.5
    if impl == "ours":
        from llm_teach.trainers.losses.tiled import TiledDistillLoss

        loss = TiledDistillLoss(tile_rows=tile_rows or None, divergence="forward_kl" if beta == 0 else "jsd", jsd_beta=0.5)
        return lambda hs, ws, ht, wt, m: loss(hs, ws, m, teacher_hidden=ht, teacher_head=wt).loss.backward()
    if impl == "gkd_dense":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gkd import GKDTrainer

        def dense(hs, ws, ht, wt, m):
            with torch.no_grad():
                teacher = ht @ wt.T
            labels = torch.where(m.bool(), 0, -100)
            GKDTrainer.generalized_jsd_loss(hs @ ws.T, teacher, labels, beta=beta).backward()

        return dense
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    return lambda hs, ws, ht, wt, m: _chunked_divergence_loss(hs, ht, ws, wt, m, beta)[0].backward()


def worker(impl: str, vocab: int, batch: int, length: int, divergence: str, repeats: int, tile_rows: int) -> dict:
    """Runs in the subprocess: the measurement of one (configuration, implementation)."""
    import gc

    import torch

    g = torch.Generator().manual_seed(0)
    hs = torch.randn(batch, length, HIDDEN, generator=g, requires_grad=True)
    ws = (torch.randn(vocab, HIDDEN, generator=g) * 0.05).requires_grad_()
    ht = torch.randn(batch, length, HIDDEN, generator=g)
    wt = torch.randn(vocab, HIDDEN, generator=g) * 0.05
    mask = torch.ones(batch, length)
    step = _step_fn(impl, divergence, tile_rows)
    gc.collect()
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    c0, t0 = time.process_time(), time.perf_counter()
    step(hs, ws, ht, wt, mask)
    times = [(time.process_time() - c0, time.perf_counter() - t0)]
    peak = _status("VmHWM") - base
    for _ in range(repeats):
        hs.grad = ws.grad = None
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        step(hs, ws, ht, wt, mask)
        times.append((time.process_time() - c0, time.perf_counter() - t0))
    cpu, wall = min(times[1:] or times)
    return {"peak_gb": peak / 1e9, "seconds": cpu, "wall_seconds": wall, "threads": torch.get_num_threads()}


@dataclass
class Row:
    vocab: int
    batch: int
    length: int
    divergence: str
    results: dict  # impl -> {"peak_gb", "seconds"} or {"skipped": reason}

    @property
    def name(self) -> str:
        return f"V{self.vocab}_{self.batch}x{self.length}_{self.divergence}"


def _skip_reason(impl: str, vocab: int, batch: int, length: int, divergence: str, args) -> str | None:
    if impl != "gkd_dense":
        return None
    estimate = DENSE_COPIES[divergence] * batch * length * vocab * 4 / 1e9
    limit = min(args.max_gb, _meminfo("MemAvailable") / 1e9 - args.leave_gb)  # room for the others
    if estimate > limit:
        return f"over memory (~{estimate:.1f} GB estimated, limit {limit:.1f} GB)"
    return None


def run_one(impl: str, cfg: tuple, args) -> dict:
    reason = _skip_reason(impl, *cfg, args)
    if reason:
        return {"skipped": reason}
    cmd = [sys.executable, __file__, "--worker", impl, *map(str, cfg), "--repeats", str(args.repeats),
           "--tile-rows", str(args.tile_rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        return {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(row: Row) -> list[tuple[str, float]]:
    """`(name, ours / peer)` for memory and time against each peer that ran, and time against
    the faster of the two."""
    ours, out = row.results["ours"], []
    if "skipped" in ours:
        return out
    ran = {p: row.results[p] for p in IMPLS[1:] if "skipped" not in row.results[p]}
    for peer, res in ran.items():
        out.append((f"mem_vs_{peer}[{row.name}]", ours["peak_gb"] / res["peak_gb"]))
        out.append((f"time_vs_{peer}[{row.name}]", ours["seconds"] / res["seconds"]))
    if ran:
        fastest = min(res["seconds"] for res in ran.values())
        out.append((f"time_vs_faster_peer[{row.name}]", ours["seconds"] / fastest))
    return out


def _cell(res: dict) -> str:
    return res["skipped"] if "skipped" in res else f"{res['peak_gb']:.2f} GB, {res['seconds']:.2f} s"


def _cached(path: str | None) -> dict:
    """`(row name, impl) -> result` of the earlier runs in the `--cache` JSONL file."""
    if not path or not Path(path).exists():
        return {}
    entries = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return {(e["row"], e["impl"]): e for e in entries}


def table(rows: list[Row], command: str, load: tuple[str, str], threads: str) -> str:
    lines = [
        "## KD loss: memory and time vs TRL (issue 11, section 2)", "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"{_meminfo('MemTotal') / 2**30:.0f} GiB RAM, no GPU; torch threads per worker: {threads} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; another long job uses the other core); "
        f"1-min load average {load[0]} at start, {load[1]} at end (the cores are shared: compare ratios within a run).",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}).",
        "Workload: one forward+backward from student hidden [B, T, 576] + head [V, 576] (both with grad) and "
        "teacher hidden + head, float32, every position valid; peak RSS above the inputs (VmHWM); time = CPU "
        "seconds of the worker process (`time.process_time`), best of the repeats; the ratios use CPU time. "
        "ours = `TiledDistillLoss` (fused path), TRL 1.16 GKD dense = `generalized_jsd_loss` on full "
        "logits, TRL chunked = `_chunked_divergence_loss` (CPU torch path).", "",
        "| V, BxT, divergence | ours | TRL GKD dense | TRL chunked | mem vs GKD | mem vs chunked | time vs faster |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        r = dict((name.split("[")[0], v) for name, v in ratios(row))
        fmt = lambda k: f"{r[k]:.2f}x" if k in r else "-"  # noqa: E731
        lines.append(f"| {row.vocab}, {row.batch}x{row.length}, {row.divergence} | "
                     + " | ".join(_cell(row.results[i]) for i in IMPLS)
                     + f" | {fmt('mem_vs_gkd_dense')} | {fmt('mem_vs_trl_chunked')} | {fmt('time_vs_faster_peer')} |")
    return "\n".join(lines)


def write_results(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{START}\n{text}\n{END}"
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S)
    RESULTS.write_text(new if START in old else old.rstrip() + "\n\n" + block + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=5, metavar=("IMPL", "V", "B", "T", "DIV"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the memory step")
    parser.add_argument("--tile-rows", type=int, default=0, help="rows per tile of ours (0: its default)")
    parser.add_argument("--max-gb", type=float, default=16.0, help="dense runs estimated above this: over memory")
    parser.add_argument("--leave-gb", type=float, default=8.0, help="memory to leave to the machine's other jobs")
    parser.add_argument("--cache", help="JSONL file of finished measurements: reused, and appended to")
    parser.add_argument("--only", help="run only configurations whose name contains this (e.g. V49152_4x512)")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        impl, v, b, t, div = args.worker
        print(json.dumps(worker(impl, int(v), int(b), int(t), div, args.repeats, args.tile_rows)))
        return
    cache, rows = _cached(args.cache), []
    for cfg in CONFIGS:
        row = Row(*cfg, results={})
        if args.only and args.only not in row.name:
            continue
        for impl in IMPLS:
            if (row.name, impl) not in cache:
                load, started = Path("/proc/loadavg").read_text().split()[0], time.time()
                entry = {"row": row.name, "impl": impl, **run_one(impl, cfg, args), "load_start": load, "started": started,
                         "load_end": Path("/proc/loadavg").read_text().split()[0]}
                cache[row.name, impl] = entry
                if args.cache:
                    with open(args.cache, "a") as f:
                        f.write(json.dumps(entry) + "\n")
            row.results[impl] = cache[row.name, impl]
            print(f"# {row.name} {impl}: {_cell(row.results[impl])} (wall "
                  f"{row.results[impl].get('wall_seconds', 0):.2f} s, load {row.results[impl]['load_start']})", flush=True)
        for name, value in ratios(row):
            print(f"RATIO {name} {value:.3f}", flush=True)
        rows.append(row)
    entries = sorted((r for row in rows for r in row.results.values()), key=lambda e: e.get("started", 0))
    load = (entries[0]["load_start"], entries[-1]["load_end"]) if entries else ("-", "-")
    threads = ",".join(sorted({str(e["threads"]) for e in entries if "threads" in e})) or "-"
    argv = [Path(a).name if a == args.cache else a for a in sys.argv[1:]]  # no machine path in RESULTS.md
    threads_env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    text = table(rows, threads_env + "python " + " ".join(["benchmarks/kd_loss.py", *argv]), load, threads)
    print(text)
    if args.write:
        write_results(text)


if __name__ == "__main__":
    main()
