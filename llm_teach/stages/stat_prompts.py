"""How STAT poses a problem and samples: the evaluation prompt, the SFT record built on it and
the sampling of solutions (shared by the diagnosis, STAT-Sel and STAT-Syn)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_teach.backends import SamplingConfig
from llm_teach.prompts import render

if TYPE_CHECKING:  # only for annotations: stat.py imports this module
    from llm_teach.stages.stat import STATConfig


def solve_prompt(question: str, config: STATConfig) -> list[dict[str, str]]:
    """How a problem is posed: the evaluation prompt, so SFT trains the student in the context
    it is tested in."""
    return [{"role": "user", "content": render(config.solve_template, question=question)}]


def sft_record(rid: str, question: str, solution: str, config: STATConfig, **extra: Any) -> dict[str, Any]:
    """A `{messages}` SFT record: the problem as posed by `solve_prompt`, then the solution."""
    return {"id": rid, "messages": [*solve_prompt(question, config), {"role": "assistant", "content": solution}],
            **extra}


def sampled(config: STATConfig, temperature: float, seed: int) -> SamplingConfig:
    """Sampling for teacher solutions at `temperature` (sampled, so repeated solutions are independent)."""
    return SamplingConfig(temperature=temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=seed)
