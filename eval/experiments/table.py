"""The RESULTS table (and plot) from a cpu-compare run directory (run from the project root):

    python eval/experiments/table.py runs/cpu-compare [--plot eval/cpu-compare.png] [--set KEY=VALUE]
        [--update eval/RESULTS.md]

`--update FILE` writes the table into FILE between the lines `<!-- table.py: begin -->` and
`<!-- table.py: end -->`, so the committed RESULTS table is exactly this script's output.

Reads OUT/pipeline.json, which `llm-teach run` writes: each eval step's summary (accuracy, n)
and each step's `cpu_seconds`. A method's row is its `M-s{0,1,2}-heldout` evaluations (mean and
sample sd over the seeds that finished); its CPU-minutes are the mean over seeds of the `M-s*`
train step plus the whole of its stage step `M`, if any (what one more training of the method
would cost from scratch). Teacher calls: the sequences the teacher generated or scored for one
training of the method: its stage's teacher completions (the stage manifest's `usage`) plus, for
a trainer that queries the teacher itself (logitkd, seqkd, gkd, kdrl), one per training sequence
(optimizer steps x sequences per step, from its manifest and config). GSM8K: the method's seed-0
model on the fixed GSM8K subset (`gsm8k-M-s0`). Answered: the mean fraction of held-out problems
with an extractable answer (1 - `no_answer_fraction`), to tell a format gain from an arithmetic
one. Steps not finished yet show as pending, and so do steps completed under an earlier
definition of the pipeline (`llm-teach run --status` calls them stale).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

TEACHER_IN_TRAINER = {"seqkd", "logitkd", "gkd", "kdrl"}
STAGES = {"ssb", "llm2llm", "stat-sel", "stat-syn", "arte"}
METHODS = ["sft-gold", "seqkd", "logitkd", "gkd", "grpo", "kdrl", "ssb", "llm2llm", "stat-sel", "stat-syn", "arte"]
# What each method must beat (eval/RESULTS.md): the data and distillation methods SFT on gold,
# the RL-based ones GRPO, SFT on gold and GRPO the untrained student.
BASELINE = {"sft-gold": "none", "grpo": "none", "kdrl": "grpo", "ssb": "grpo",
            **{m: "sft-gold" for m in ("seqkd", "logitkd", "gkd", "llm2llm", "stat-sel", "stat-syn", "arte")}}


def verdict(row: dict, base: dict) -> str | None:
    """"beats" / "worse than" / "ties" the baseline: beating needs a higher mean by more than
    both rows' standard deviations (a one-model row has none), so seed noise alone never
    decides; None while either row is pending."""
    if row["mean"] is None or base["mean"] is None:
        return None
    margin = max(row["sd"] or 0.0, base["sd"] or 0.0)
    diff = row["mean"] - base["mean"]
    return "beats" if diff > margin else "worse than" if -diff > margin else "ties"


def current_steps(out: Path, overrides: list[str] | None = None) -> dict[str, dict]:
    """Each step's record in OUT/pipeline.json, with only the results that answer the pipeline
    file as it is now (`llm-teach run --status`): a step completed under an earlier definition
    (round 1's student, say) is stale and must not enter the table."""
    from llm_teach.pipeline import load_pipeline
    from llm_teach.pipeline_status import pipeline_status

    state = json.loads((out / "pipeline.json").read_text())
    status = {r["name"]: r for r in pipeline_status(load_pipeline(state["pipeline"], overrides), out)}
    return {name: {**record, "status": status[name]["status"]} for name, record in state["steps"].items()
            if name in status}


def rows(out: Path, overrides: list[str] | None = None) -> tuple[list[dict], float | None, float | None]:
    """The table's rows, the teacher's and the untrained student's accuracy, from OUT."""
    return table_rows(current_steps(out, overrides), out)


def table_rows(steps: dict[str, dict], out: Path) -> tuple[list[dict], float | None, float | None]:
    """The rows from `steps` (name -> pipeline.json record with its `status`) and the stage and
    train manifests in `out`; only `complete` steps count."""

    def result(name):
        s = steps.get(name)
        return s["result"] if s and s.get("status") == "complete" else None

    def acc(name, key="accuracy"):
        r = result(name)
        return r["summary"][key] if r else None

    def teacher_calls(m):
        calls, stage = 0, out / m / "manifest.json"
        if m in STAGES and result(m) is None:
            return None
        if stage.exists():
            calls += json.loads(stage.read_text()).get("usage", {}).get("teacher", {}).get("completions", 0)
        train = out / f"{m}-s0" / "manifest.json"
        if m in TEACHER_IN_TRAINER:
            if result(f"{m}-s0") is None:
                return None
            manifest = json.loads(train.read_text())
            config = manifest.get("config") or {}
            batch = int(config.get("per_device_train_batch_size", 1)) * int(config.get("gradient_accumulation_steps", 1))
            calls += int(manifest.get("global_step", 0)) * batch * int(manifest.get("world_size", 1))
        return calls

    teacher, none = acc("teacher-heldout"), acc("none-heldout")
    table = [{"method": "none", "seeds": 1 if none is not None else 0, "each": [], "error": None, "mean": none, "sd": None,
              "gap": 0.0, "answered": None if none is None else 1 - acc("none-heldout", "no_answer_fraction"),
              "cpu_min": 0.0, "teacher_calls": 0, "gsm8k": acc("gsm8k-none")}]
    for m in METHODS:
        accs = [a for s in range(3) if (a := acc(f"{m}-s{s}-heldout")) is not None]
        # Answered: a boxed (or otherwise extractable) answer at all, i.e. the format was learnt;
        # accuracy well above the untrained student's but no higher than what answering at all
        # buys is a format gain, not arithmetic.
        answered = [1 - a for s in range(3) if (a := acc(f"{m}-s{s}-heldout", "no_answer_fraction")) is not None]
        train_cpu = [r["cpu_seconds"] for s in range(3) if (r := result(f"{m}-s{s}")) and "cpu_seconds" in r]
        stage = result(m)
        cpu_min = (statistics.mean(train_cpu) + (stage or {}).get("cpu_seconds", 0)) / 60 if train_cpu else None
        mean = statistics.mean(accs) if accs else None
        gap = (mean - none) / (teacher - none) if None not in (mean, none, teacher) and teacher != none else None
        errors = [f"{n}: {steps[n]['error']}" for n in (m, f"{m}-s0") if (steps.get(n) or {}).get("status") == "failed"]
        table.append({"method": m, "seeds": len(accs), "each": accs, "error": errors[0] if errors else None, "mean": mean,
                      "sd": statistics.stdev(accs) if len(accs) > 1 else None, "gap": gap,
                      "answered": statistics.mean(answered) if answered else None, "cpu_min": cpu_min,
                      "teacher_calls": teacher_calls(m), "gsm8k": acc(f"gsm8k-{m}-s0")})
    by_name = {r["method"]: r for r in table}
    for r in table:
        base = BASELINE.get(r["method"])
        r["baseline"], r["verdict"] = base, verdict(r, by_name[base]) if base else None
    return table, teacher, none


def _summary(steps: dict[str, dict], name: str) -> float | None:
    step = steps.get(name) or {}
    return step["result"]["summary"]["accuracy"] if step.get("status") == "complete" else None


def markdown(table: list[dict], teacher: float | None, none: float | None, gsm: dict[str, float]) -> str:
    """The table as Markdown, with the teacher, the untrained student and the GSM8K references
    on the line above it."""
    fmt = lambda v, f="{:.3f}": "pending" if v is None else f.format(v)  # noqa: E731
    gsm_line = ", ".join(f"{name} {acc:.3f}" for name, acc in gsm.items()) or "pending"
    lines = [f"Teacher {fmt(teacher)}, no training {fmt(none)} (held-out, 256). GSM8K subset: {gsm_line}.", "",
             "| method | seeds | accuracy mean ± sd (each seed) | vs baseline | gap recovered | answered "
             "| CPU-min (mean per seed, incl. stage) | teacher calls | GSM8K subset (s0) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        if r["error"] and not r["seeds"]:
            lines.append(f"| {r['method']} | 0 | did not run: {r['error']} | | | | | | |")
            continue
        sd = fmt(r["sd"]) if r["seeds"] != 1 else "— (one model)"
        each = f" ({', '.join(f'{a:.3f}' for a in r['each'])})" if len(r["each"]) > 1 else ""
        accuracy = "pending" if r["mean"] is None else f"{fmt(r['mean'])} ± {sd}{each}"
        versus = ("—" if not r["baseline"] else "pending" if r["mean"] is None
                  else f"{r['verdict'] or 'pending'} {r['baseline']}")  # "pending sft-gold": the baseline is not measured yet
        lines.append(f"| {r['method']} | {r['seeds']} | {accuracy} | {versus} "
                     f"| {fmt(r['gap'], '{:.2f}')} | {fmt(r['answered'], '{:.2f}')} | {fmt(r['cpu_min'], '{:.1f}')} "
                     f"| {fmt(r['teacher_calls'], '{:d}')} | {fmt(r['gsm8k'])} |")
    return "\n".join(lines)


BEGIN, END = "<!-- table.py: begin -->", "<!-- table.py: end -->"


def update(path: Path, text: str) -> None:
    """Replace what lies between the BEGIN and END lines of `path` with `text`."""
    doc = path.read_text()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        raise SystemExit(f"{path}: needs one '{BEGIN}' line and, after it, one '{END}' line")
    head, rest = doc.split(BEGIN)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--update", type=Path, metavar="FILE", help="write the table into FILE between its markers")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="the --set options the run was made with (e.g. round 1's vars.student)")
    args = ap.parse_args()
    table, teacher, none = rows(args.out, args.set)
    steps = current_steps(args.out, args.set)
    gsm = {name: acc for name in ("gsm8k-teacher-base", "gsm8k-teacher", "gsm8k-none")
           if (acc := _summary(steps, name)) is not None}
    text = markdown(table, teacher, none, gsm)
    print(text)
    if args.update:
        update(args.update, text)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        # A legend, not labels beside the points: in a cluster a label lands nearer another
        # point than its own. Colour and marker together tell 12+ methods apart.
        styles = [(c, m) for m in "osD^v" for c in plt.get_cmap("tab10").colors]
        measured = [r for r in table if r["method"] != "none" and r["mean"] is not None and r["cpu_min"] is not None]
        for r, (color, marker) in zip(measured, styles):  # the untrained student is the dashed line
            ax.errorbar(r["cpu_min"], r["mean"], yerr=r["sd"] or 0, fmt=marker, color=color, capsize=3,
                        label=f"{r['method']} {r['mean']:.3f}")
        if measured:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
            # log: a stage can cost 25x a plain training (ARTE), which squashes the others together
            ax.set_xscale("log")
            ticks = [t for t in (2, 5, 10, 20, 50, 100, 200, 500) if t <= 2 * max(r["cpu_min"] for r in measured)]
            ax.set_xticks(ticks, [str(t) for t in ticks])
        for y, label in ((teacher, "teacher"), (none, "no training")):
            if y is not None:
                ax.axhline(y, ls="--", lw=0.8, color="grey")
                ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), ha="left", va="bottom", fontsize=8)
        ax.set_xlabel("CPU-minutes per training (incl. the stage)")
        ax.set_ylabel("held-out accuracy (256 problems)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
