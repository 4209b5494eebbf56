"""How close is KD from a sparse (stored) teacher to KD from the full-vocabulary teacher?

On real SmolLM2-135M teacher distributions (the teacher's own greedy completions of
rg:chain_sum problems; student: the 24-layer cut), computes the mean KD divergence over all
completion positions from each sparse target and compares it with the same mean from the full
teacher, at T=1 and T=2:

* `renorm_kK`: today's top-k renormalized over itself;
* `tail_kK`: top-k + one tail bucket (log tail mass stored per temperature);
* `sampled_kK_mM`: top-k + M tail tokens sampled at T=2 (stratified sparse logit sampling),
  over several sampling seeds (the worst seed is what a RATIO line reports).

Prints `RATIO <name> <value>` lines: `kd_err_<target>_T<t>` is the signed relative error
(sparse / full - 1, so 0.02 = +2%), `bytes_per_token_<target>` the on-disk cost of the format
(int32 ids + float16 log-probs per entry, 4 B token id + 4 B token log-prob, 4 B per stored
tail temperature). `--write` records the table in benchmarks/RESULTS.md.

    PYTHONPATH=. .venv/bin/python benchmarks/logit_store.py [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

from llm_teach.data.sparse_targets import sample_log_weights, sparse_from_logits, tail_from_topk
from llm_teach.trainers.losses.distill import dense_divergence, topk_divergence
from llm_teach.trainers.losses.sparse import sparse_divergence

TEMPS = (1.0, 2.0)
SAMPLE_T = 2.0
SEEDS = 5
CANDIDATES = ((8, 22), (16, 14), (24, 6))  # k + m = 30 entries: <= 200 bytes/token with two tail temperatures
DEFAULT = ("sampled", 16, 14)  # the store default (data.logit_store.DEFAULT_*), chosen from this table


def teacher_and_student(problems: int, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full logits [N, V] of teacher and student at every completion position."""
    from llm_teach.backends.base import SamplingConfig, encode_prompt
    from llm_teach.backends.hf import HFBackend
    from llm_teach.data.problems import load_problems
    from llm_teach.models import load_model

    torch.manual_seed(0)
    teacher = HFBackend("smollm2-135m")
    student = load_model("smollm2-135m?layers=24", "float32", "cpu")
    prompts = [p.question for p in load_problems("rg:chain_sum", problems)]
    gens = teacher.generate(prompts, 1, SamplingConfig(max_new_tokens=new_tokens))
    t_rows, s_rows = [], []
    with torch.no_grad():
        for prompt, (gen,) in zip(prompts, gens):
            p = encode_prompt(teacher.tokenizer, prompt)
            ids = torch.tensor([p + gen.token_ids])
            span = slice(len(p) - 1, ids.size(1) - 1)
            t_rows.append(teacher.lm(ids).logits[0, span].float())
            s_rows.append(student(ids).logits[0, span].float())
    return torch.cat(t_rows), torch.cat(s_rows)


def bytes_per_token(k: int, m: int, temps: int) -> int:
    return 8 + 6 * (k + m) + 4 * temps


def errors(teacher: torch.Tensor, student: torch.Tensor) -> dict[str, dict[str, float]]:
    """{divergence: {f"{target}_T{t}": signed relative error of the mean KD over positions}}.
    Each sparse target is built once and scored with every divergence."""
    t3, s3 = teacher[None], student[None]
    divs = ("forward_kl", "reverse_kl", "jsd")
    full = {(d, t): dense_divergence(s3, t3, d, temperature=t).mean().item() for d in divs for t in TEMPS}
    out: dict[str, dict[str, float]] = {d: {} for d in divs}

    def score(name: str, ids, lp, tails, weights=None, pick=None) -> None:
        for d in divs:
            for i, t in enumerate(TEMPS):
                v = sparse_divergence(s3, ids, lp, tails[..., i], weights, d, temperature=t).mean().item() / full[d, t] - 1
                key = f"{name}_T{t:g}"
                out[d][key] = v if pick is None else pick(out[d].get(key), v)

    for k in (8, 32, 128):
        target = sparse_from_logits(teacher, k, TEMPS)
        ids, lp = target.ids[None], target.logprobs[None]
        for t in TEMPS:  # today: renormalized (forward KL only: reverse KL is refused there)
            out["forward_kl"][f"renorm_k{k}_T{t:g}"] = topk_divergence(
                s3, ids, lp, temperature=t).mean().item() / full["forward_kl", t] - 1
        score(f"tail_k{k}", ids, lp, target.log_tail[None])
        if k == 32:  # the T=1 bucket from the top-k alone (what a served teacher / v1 store gives)
            derived = sparse_divergence(s3, ids, lp, tail_from_topk(lp), None, temperature=1.0)
            out["forward_kl"]["tail_k32_from_topk_T1"] = derived.mean().item() / full["forward_kl", 1.0] - 1
    worst = lambda old, new: new if old is None or abs(new) > abs(old) else old  # noqa: E731
    for k, m in CANDIDATES:
        for seed in range(SEEDS):
            g = torch.Generator().manual_seed(seed)
            target = sparse_from_logits(teacher, k, TEMPS, m, SAMPLE_T, g)
            ids, lp, tails = target.ids[None], target.logprobs[None], target.log_tail[None]
            w = sample_log_weights(lp, k, tails[..., TEMPS.index(SAMPLE_T)], SAMPLE_T)
            score(f"sampled_k{k}_m{m}", ids, lp, tails, w, pick=worst)
    for d in divs:
        out[d] |= {f"full_T{t:g}": full[d, t] for t in TEMPS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=160)
    ap.add_argument("--new-tokens", type=int, default=25)
    ap.add_argument("--write", action="store_true", help="record the table in benchmarks/RESULTS.md")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(2)
    teacher, student = teacher_and_student(args.problems, args.new_tokens)
    results = errors(teacher, student)
    rows = []
    for div, errs in results.items():
        prefix = "" if div == "forward_kl" else f"{div}_"
        for name, err in errs.items():
            if not name.startswith("full_"):
                print(f"RATIO kd_err_{prefix}{name} {err:+.4f}")
    for name in sorted({n.rsplit("_T", 1)[0] for n in results["forward_kl"] if not n.startswith("full_")}):
        k = int(re.search(r"_k(\d+)", name).group(1))
        m = int(re.search(r"_m(\d+)", name).group(1)) if "_m" in name else 0
        temps = 0 if name.startswith("renorm") else len(TEMPS)
        print(f"RATIO bytes_per_token_{name} {bytes_per_token(k, m, temps)}")
        rows.append((name, k, m, bytes_per_token(k, m, temps)))
    kind, k, m = DEFAULT
    print(f"RATIO kd_err_default_T1 {results['forward_kl'][f'{kind}_k{k}_m{m}_T1']:+.4f}")
    print(f"RATIO kd_err_default_T2 {results['forward_kl'][f'{kind}_k{k}_m{m}_T2']:+.4f}")
    print(f"RATIO bytes_per_token_default {bytes_per_token(k, m, len(TEMPS))}")
    print(f"positions {teacher.size(0)}; full forward KL T=1 {results['forward_kl']['full_T1']:.4f}, "
          f"T=2 {results['forward_kl']['full_T2']:.4f}; load {load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.write:
        write_results(rows, results, teacher.size(0), args.problems, load_start, os.getloadavg()[0])


def write_results(rows, results, positions: int, problems: int, load_start: float, load_end: float) -> None:
    def cell(div: str, name: str, t: str) -> str:
        v = results[div].get(f"{name}_T{t}")
        return "" if v is None else f"{v * 100:+.1f}%"

    lines = ["<!-- logit_store:start -->", "## Sparse teacher targets: KD error vs full-vocabulary KD", "",
             f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), no GPU; load average "
             f"{load_start:.1f} at start, {load_end:.1f} at end. Command: `PYTHONPATH=. python benchmarks/logit_store.py "
             f"--write` ({time.strftime('%Y-%m-%d')}).",
             f"Workload: SmolLM2-135M teacher's greedy completions of {problems} rg:chain_sum problems "
             f"({positions} completion positions), student = its 24-layer cut, float32. Error = mean sparse KD / mean "
             f"full KD - 1; sampled rows: the worst of {SEEDS} sampling seeds (tail tokens drawn at T={SAMPLE_T:g}).", "",
             "| target | k | samples | bytes/token | fwd KL T=1 | fwd KL T=2 | rev KL T=1 | rev KL T=2 | JSD T=1 | JSD T=2 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, k, m, b in rows:
        cells = [cell(d, name, t) for d in ("forward_kl", "reverse_kl", "jsd") for t in ("1", "2")]
        lines.append(f"| {name} | {k} | {m} | {b} | " + " | ".join(cells) + " |")
    lines += ["", "<!-- logit_store:end -->"]
    path = Path(__file__).with_name("RESULTS.md")
    text = path.read_text()
    block = "\n".join(lines)
    if "<!-- logit_store:start -->" in text:
        text = re.sub(r"<!-- logit_store:start -->.*<!-- logit_store:end -->", lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
