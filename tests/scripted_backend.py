"""A scripted stand-in for a model, for testing stage *logic* (selection, validation, counts).

With tiny-random weights nearly nothing is ever graded correct, so the branches of a stage
that depend on right and wrong answers would go untested. This backend implements the real
`Backend` protocol with completions chosen by a test's `respond` function; the stage code
under test runs unchanged. Scores are deterministic pseudo log-probs over word "tokens".
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from llm_teach.backends.base import Generation, Prompt, SamplingConfig, TokenLogprobs


def prompt_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


class ScriptedBackend:
    """`respond(text, sample_index, seed) -> completion`; every call is recorded in `calls`."""

    name = "scripted"
    end_of_turn = "<eos>"

    def __init__(self, respond: Callable[[str, int, int], str], model: str = "scripted-model",
                 finish_reason: str = "stop"):
        self.respond = respond
        self.model = model
        self.finish_reason = finish_reason  # "length": every completion was cut by the token budget
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> list[list[Generation]]:
        out = []
        for prompt in prompts:
            text = prompt_text(prompt)
            self.calls.append(("generate", text))
            row = []
            for i in range(n):
                completion = self.respond(text, i, sampling.seed)
                row.append(Generation(prompt=prompt, completion=completion, finish_reason=self.finish_reason,
                                      backend=self.name, model=self.model, sampling=sampling.to_dict(),
                                      token_ids=[_tok(w) for w in completion.split()]))
            out.append(row)
        return out

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0,
              tail=None) -> list[TokenLogprobs]:
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            self.calls.append(("score", completion))
            ids = [_tok(w) for w in completion.split()]
            logps = [-0.1 * (1 + i % 3) for i in range(len(ids))]
            tops = [{(t + j) % 1000: lp - j for j in range(top_k)} for t, lp in zip(ids, logps)] if top_k else None
            scored = TokenLogprobs(token_ids=ids, logprobs=logps, top_k=tops)
            if tail is not None:  # scripted too: a fixed tail mass, samples just past the top-k
                scored.log_tail = {t: [-1.0 * t] * len(ids) for t in tail.temperatures}
                scored.tail_samples = [[((t + top_k + j) % 1000, lp - top_k - j) for j in range(tail.samples)]
                                       for t, lp in zip(ids, logps)]
            out.append(scored)
        return out


def _tok(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:2], "little") % 997
