"""STAT's skill catalog (step 1): free-form labels of every problem, clustered by the teacher.

The method STAT builds on (Didolkar et al. 2024, "Metacognitive capabilities of LLMs") has the
teacher name the skills of EVERY problem in its own words and then cluster those names into a
catalog (about 117 skills for MATH); STAT's labels and missing-skill judgements use that
catalog. A list proposed from a few dozen sampled problems misses the skills of the rest, so:

1. free labels: the teacher names up to `max_labels` skills per problem, free-form, for all
   problems (or a seeded sample of `catalog_sample`);
2. merge: names that differ only in case, punctuation, spacing or a plural `s` are one name
   (first spelling kept), counted over all problems;
3. cluster: the teacher reads the merged names, most frequent first (at most
   `catalog_max_names`), and groups them into a catalog of at most `max_skills` skills.

`skills.json` records the catalog, the teacher's raw reply and every merged name with its count.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from llm_teach.backends import Backend, SamplingConfig
from llm_teach.data.problems import Problem
from llm_teach.prompts import render
from llm_teach.runs.stage_run import Unit, Work
from llm_teach.stages.parsing import dedupe_skills, parse_name_list, skill_key

if TYPE_CHECKING:  # only for annotations: stat.py imports this module
    from llm_teach.stages.stat import STATConfig


def free_labels(unit: Unit, teacher: Backend, config: STATConfig) -> Work:
    """The teacher's own names for each problem's skills: `{id, names}` per problem."""
    problems: tuple[Problem, ...] = unit.items
    prompts = [[{"role": "user", "content": render(config.free_label_template, question=p.question,
                                                   max_labels=config.max_labels)}] for p in problems]
    outs = teacher.generate(prompts, 1, SamplingConfig(temperature=0.0, max_new_tokens=config.list_max_new_tokens,
                                                       seed=unit.seed))
    records = [{"id": p.id, "names": dedupe_skills(parse_name_list(gens[0].completion, loose=True))[:config.max_labels]}
               for p, gens in zip(problems, outs)]
    counts = Counter({"catalog/labelled": sum(bool(r["names"]) for r in records),
                      "catalog/unlabelled": sum(not r["names"] for r in records)})
    return Work(records={"free_labels": records}, counts=counts)


def near_key(name: str) -> str:
    """One key for near-identical names: case, punctuation, spacing and a plural `s` ignored."""
    return " ".join(word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word
                    for word in skill_key(name).split())


def merge_names(labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`[{name, count}]` over all free labels, near-identical names merged (first spelling kept),
    most frequent first, ties in order of first appearance."""
    first: dict[str, str] = {}
    counts: Counter = Counter()
    for record in labels:
        for name in record["names"]:
            key = near_key(name)
            if key:
                first.setdefault(key, name)
                counts[key] += 1
    order = {key: i for i, key in enumerate(first)}
    return [{"name": first[k], "count": counts[k]} for k in sorted(first, key=lambda k: (-counts[k], order[k]))]


def cluster(merged: list[dict[str, Any]], teacher: Backend, config: STATConfig, seed: int) -> Work:
    """The teacher groups the merged names into the catalog (at most `max_skills` skills)."""
    names = [m["name"] for m in merged[:config.catalog_max_names]]
    counts: Counter = Counter({"skills/merged_names": len(merged), "skills/names_shown": len(names)})
    text = ""
    if names:
        prompt = [{"role": "user", "content": render(config.skills_template, names=names, max_skills=config.max_skills)}]
        text = teacher.generate([prompt], 1, SamplingConfig(temperature=0.0, max_new_tokens=config.catalog_max_new_tokens,
                                                            seed=seed))[0][0].completion
    proposed = parse_name_list(text)
    skills = dedupe_skills(proposed)[:config.max_skills]
    counts.update({"skills/proposed": len(proposed), "skills/kept": len(skills), "skills/none_parsed": int(not skills)})
    return Work(records={"skills": [{"id": s, "name": s} for s in skills], "raw": [{"id": "raw", "text": text}],
                         "merged": [{"id": m["name"], **m} for m in merged]}, counts=counts)
