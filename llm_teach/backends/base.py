"""Records and the protocol every generation backend implements.

The backend seam is what makes a CPU laptop and a GPU cluster run the same stage code:
`hf` (transformers in-process), `openai` (any OpenAI-compatible server) and `vllm`
(in-process vLLM) all return these records. They also share the two pieces of text handling
that must agree across backends for their outputs to be comparable: how a prompt becomes
token ids (`encode_prompt`) and where a completion ends at a stop string (`cut_at_stop`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, Union, runtime_checkable

from llm_teach.config import check_fields, option

Message = dict[str, str]
# A prompt is either plain text (sent as-is) or a chat (rendered with the model's template).
Prompt = Union[str, list[Message]]


@dataclass
class SamplingConfig:
    """How to sample. `temperature == 0` means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    logprobs: bool = False  # also return the log-prob of every sampled token

    def __post_init__(self) -> None:
        check_fields(self, temperature=">= 0", top_p="(0, 1]", max_new_tokens=">= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_p_option() -> Any:
    """The `top_p` field of a stage config whose sampled calls all share one nucleus (it becomes
    their `SamplingConfig.top_p`)."""
    return option("Nucleus sampling of every sampled call.", 1.0)


@dataclass
class Generation:
    """One completion of one prompt (the Generation record of DESIGN.md)."""

    prompt: Prompt
    completion: str
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    backend: str
    model: str
    sampling: dict[str, Any]
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # log p of each sampled token, when asked for
    problem_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenLogprobs:
    """Log-probs a model assigns to the tokens of a given completion.

    `token_ids[i]` is the i-th completion token, `logprobs[i]` its log-prob given the prompt
    and the completion tokens before it; `top_k[i]` (when asked for) maps the k most likely
    token ids at that position to their log-probs.
    """

    token_ids: list[int]
    logprobs: list[float]
    top_k: list[dict[int, float]] | None = None
    # With a TailRequest: per temperature T, each position's log mass outside its top-k at T,
    # and each position's tail samples as (token id, T=1 log-prob) pairs.
    log_tail: dict[float, list[float]] | None = None
    tail_samples: list[list[tuple[int, float]]] | None = None

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


@dataclass(frozen=True)
class TailRequest:
    """What `score(..., tail=...)` must add to the top-k so a sparse KD target keeps the teacher's
    tail (`llm_teach.data.sparse_targets`): the log tail mass at each temperature, and `samples`
    tail tokens drawn at `sample_temperature` (seeded by `seed` and the completion, so a redone
    record gets the same draws). Needs the full distribution: only the hf backend has it."""

    temperatures: tuple[float, ...] = (1.0,)
    samples: int = 0
    sample_temperature: float | None = None
    seed: int = 0


def refuse_tail(backend: str, tail: TailRequest | None) -> None:
    """One clear error from a backend that returns top-k log-probs at T=1 only (vLLM computes
    prompt log-probs from the raw logits, skipping every sampling processor, temperature
    included). The T=1 tail needs nothing from it: the store derives it from the top-k."""
    if tail is not None and (set(tail.temperatures) - {1.0} or tail.samples):
        from llm_teach.errors import UserError

        raise UserError(f"the {backend} teacher backend returns top-k log-probs at temperature 1 only, so it cannot "
                        f"give the tail mass at T={sorted(set(tail.temperatures) - {1.0}) or '-'} or tail samples "
                        "(asked for by the logit store's tail_temperatures / tail_samples): score with the hf "
                        "backend, or store tail_temperatures [1.0] with tail_samples 0 and distill at temperature 1")


@runtime_checkable
class Backend(Protocol):
    """What stages, trainers and evaluation need from a model."""

    name: str  # "hf", "openai", "vllm"
    model: str  # the model spec or served model name, as recorded in outputs

    def generate(
        self, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig
    ) -> list[list[Generation]]:
        """`n` completions for every prompt, in prompt order."""
        ...

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0,
        tail: TailRequest | None = None,
    ) -> list[TokenLogprobs]:
        """Log-probs of each given completion's tokens after its prompt (+ top-k alternatives,
        + the tail of `tail`; backends without the full distribution call `refuse_tail`)."""
        ...

    @property
    def end_of_turn(self) -> str:
        """The text that ends the model's turn: its tokenizer's EOS, which chat templates close
        the assistant turn with and `generate()` cuts off. A stage that stores teacher log-probs
        over a finished completion scores it too (`completion + end_of_turn`): a student
        distilled from the store only learns to STOP if the store holds the teacher's
        distribution at the stopping position."""
        ...


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt, the same for every backend (and the distill trainer): chats
    through the chat template with the generation prompt, special tokens added only to plain
    strings (the rendered template already holds them; adding them again would put a second
    BOS in front)."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`(text, cut)`: the completion cut before each stop string in turn (OpenAI semantics:
    the stop string itself is not part of the completion), and whether any cut happened.
    Backends whose engine keeps the stop string in the text (transformers' `stop_strings`,
    `transformers serve`) call this so every backend returns the same completion."""
    cut = False
    for stop in stops:
        at = text.find(stop)
        if at >= 0:
            text, cut = text[:at], True
    return text, cut
