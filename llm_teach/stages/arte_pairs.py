"""ARTE's DPO pairs, from the student's preferences (step 3 of the stage).

Question level: within each brainstorm prompt, the top quartile of its questions by score
against the bottom quartile. Rationale level: per question, the best rationale against the
worst, with the style-free rationale prompt as the DPO prompt.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from llm_teach.runs.stage_run import Work
from llm_teach.stages.arte_prompts import Brainstorm, brainstorm_prompt, rationale_prompt

if TYPE_CHECKING:  # only for annotations: arte.py imports this module
    from llm_teach.stages.arte import ARTEConfig


def attach_scores(drafts: list[dict[str, Any]], scores: dict[str, float]) -> None:
    """Each rationale gets its one-shot score (`<question id>/<style>`), each question the mean
    of its rationales' scores: what the DPO pairs are ranked by."""
    for d in drafts:
        for r in d["rationales"]:
            r["score"] = scores[f"{d['id']}/{r['style']}"]
        d["score"] = sum(r["score"] for r in d["rationales"]) / len(d["rationales"])


def question_pairs(scored: list[tuple[str, float]], allow_ties: bool) -> list[tuple[int, int]]:
    """Index pairs (chosen, rejected) over one prompt's questions `[(text, score)]`: the top
    quartile (at least one) against the bottom quartile, best with worst, second best with
    second worst, ...; a pair needs a strictly higher chosen score unless `allow_ties`.
    Ties in ranking go to the earlier question."""
    if len(scored) < 2:
        return []
    ranked = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))
    q = max(1, len(scored) // 4)
    top, bottom = ranked[:q], ranked[::-1][:q]
    return [(c, r) for c, r in zip(top, bottom) if scored[c][1] > scored[r][1] or allow_ties]


def rationale_pair(scores: list[float], allow_ties: bool) -> tuple[int, int] | None:
    """(best, worst) rationale indices of one question, or None when they are not ordered
    (first best and last worst win ties)."""
    if len(scores) < 2:
        return None
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], -i))
    if scores[best] > scores[worst] or allow_ties:
        return best, worst
    return None


def dpo_pairs(drafts: list[dict[str, Any]], prompts: dict[str, Brainstorm], config: ARTEConfig) -> Work:
    """Question- and rationale-level pairs over the scored drafts (`prompts`: brainstorm prompts by id)."""
    counts, pairs = Counter(), []
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in drafts:
        groups.setdefault(d["prompt_id"], []).append(d)
    for prompt_id, group in groups.items():
        chosen_rejected = question_pairs([(d["question"], d["score"]) for d in group], config.allow_ties)
        if len(group) >= 2 and not chosen_rejected:
            counts["pairs/question_tied"] += 1
        for c, r in chosen_rejected:
            pairs.append({"id": f"q:{group[c]['id']}>{group[r]['id']}", "level": "question",
                          "prompt": brainstorm_prompt(prompts[prompt_id], config),
                          "chosen": group[c]["question"], "rejected": group[r]["question"],
                          "chosen_score": group[c]["score"], "rejected_score": group[r]["score"]})
    for d in drafts:
        pick = rationale_pair([r["score"] for r in d["rationales"]], config.allow_ties)
        if pick is None:
            counts["pairs/rationale_tied"] += int(len(d["rationales"]) >= 2)
            continue
        best, worst = (d["rationales"][i] for i in pick)
        pairs.append({"id": f"r:{d['id']}:{best['style']}>{worst['style']}", "level": "rationale",
                      "prompt": rationale_prompt(d["question"], config),
                      "chosen": best["text"], "rejected": worst["text"],
                      "chosen_score": best["score"], "rejected_score": worst["score"]})
    counts["pairs/question"] += sum(p["level"] == "question" for p in pairs)
    counts["pairs/rationale"] += sum(p["level"] == "rationale" for p in pairs)
    return Work(records={"pairs": pairs}, counts=counts)
