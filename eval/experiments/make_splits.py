"""Write the comparison experiment's problem splits (run from the project root):

    python eval/experiments/make_splits.py

reasoning-gym seeds problem i with seed+i (tests/unit/test_worked_solutions.py), so the three
splits use seeds far apart; and since 3-term one-digit sums have only 4,000 distinct questions,
different seeds still repeat questions, so validation and held-out drop every question the
training pool has (and held-out every question validation has): exact-text decontamination.
(Word 13-gram decontamination cannot see these: the whole question is 12 words.) The files are
committed so every step reads the same problems (train.jsonl: Problems, for grpo/kdrl
and the stages; train-pairs.jsonl: the same as {prompt, completion} records for sft/distill/gkd); the script documents how they were made.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm_teach.data import load_problems

TASK = "rg:chain_sum?min_terms=3&max_terms=3&min_digits=1&max_digits=1&solutions=worked"
SPLITS = {  # name: (seed, problems drawn, problems kept)
    "train": (0, 1000, 1000),
    "validation": (100_000, 96, 64),
    "heldout": (1_000_000, 360, 256),
}
OUT = Path(__file__).parent / "data" / "chain_sum3"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for name, (seed, drawn, kept) in SPLITS.items():
        problems = load_problems(f"{TASK}&seed={seed}", drawn)
        clean = [p for p in problems if p.question not in seen]
        fresh = clean[:kept]
        if len(fresh) < kept:
            raise SystemExit(f"{name}: only {len(fresh)} problems left after decontamination (wanted {kept})")
        seen.update(p.question for p in fresh)
        with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for p in fresh:
                f.write(json.dumps(p.to_dict()) + "\n")
        if name == "train":
            write_pairs(fresh, OUT / "train-pairs.jsonl")
        print(f"{name}: seed {seed}, {drawn} drawn, {drawn - len(clean)} dropped as seen before, kept {len(fresh)}")


def write_pairs(problems, path: Path) -> None:
    """`{prompt, completion}` records of the training problems for sft, distill and gkd (which read
    records, not Problems, from a .jsonl file): the evaluation's boxed prompt, the worked solution."""
    from llm_teach.prompts import render

    with open(path, "w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps({"id": p.id, "prompt": render("eval/boxed.jinja", question=p.question),
                                "completion": p.solution}) + "\n")


if __name__ == "__main__":
    main()
