"""The prompts ARTE writes: brainstorm prompts over seed questions, rationale prompts (one
per style, and the style-free one the aligned teacher answers), and the one-shot prompt that
measures how much a rationale helps the student."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llm_teach.data.problems import Problem
from llm_teach.prompts import render
from llm_teach.runs.hashing import derive_seed

if TYPE_CHECKING:  # only for annotations: arte.py imports this module
    from llm_teach.stages.arte import ARTEConfig

STYLE_DIR = "arte/styles"


@dataclass(frozen=True)
class Brainstorm:
    """One brainstorm prompt: its id and the seed questions it shows."""

    id: str
    examples: tuple[str, ...]


def brainstorms(phase: str, count: int, seeds: list[Problem], k: int, seed: int) -> list[Brainstorm]:
    """`count` brainstorm prompts, each showing `k` seed questions sampled for it (seeded by
    phase and index, so the final phase sees fresh combinations)."""
    out = []
    for i in range(count):
        rng = random.Random(derive_seed(seed, f"{phase}-prompt/{i}"))
        chosen = sorted(rng.sample(range(len(seeds)), min(k, len(seeds))))
        out.append(Brainstorm(f"{phase}{i:04d}", tuple(seeds[j].question for j in chosen)))
    return out


def style_template(style: str) -> str:
    return f"{STYLE_DIR}/{style}.jinja"


def brainstorm_prompt(b: Brainstorm, config: ARTEConfig) -> list[dict[str, str]]:
    return [{"role": "user", "content": render(config.brainstorm_template, examples=list(b.examples))}]


def rationale_prompt(question: str, config: ARTEConfig, style: str | None = None) -> list[dict[str, str]]:
    name = style_template(style) if style else config.rationale_template
    return [{"role": "user", "content": render(name, question=question)}]


def one_shot_prompt(question: str, rationale: str, probe: Problem, config: ARTEConfig) -> list[dict[str, str]]:
    """The (question, rationale) pair as the only demonstration before a probe question: the
    student sees the rationale as its own earlier answer, in the format it is evaluated in."""
    return [{"role": "user", "content": render(config.student_template, question=question)},
            {"role": "assistant", "content": rationale},
            {"role": "user", "content": render(config.student_template, question=probe.question)}]
