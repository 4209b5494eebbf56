"""transformers in-process backend: batched sampling and one-forward scoring, CPU or GPU.

Chat prompts are rendered with the model's own chat template; batches are left-padded so
every row's new tokens start at the same column. Each batch is seeded from `sampling.seed`
and the batch's own prompts, so a resumed run that regenerates a batch gets the same samples.

Speed (benchmarks/rollout.py): generate() makes batches by tokens in flight, longest prompts
first (`hf_batching`), and prefills each prompt once for its n samples. Attention is the
model's default, `sdpa` (torch's fused scaled_dot_product_attention) for the models we ship;
the KV cache is transformers' dynamic cache (its static cache is meant to pay off under
torch.compile; `benchmarks/rollout.py --peers batched_static` measures it without). Stop strings use transformers' StopStringCriteria,
which checks every row with tensor ops, and the text is cut afterwards with `cut_at_stop`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from llm_teach.backends.base import (Generation, Prompt, SamplingConfig, TailRequest, TokenLogprobs, cut_at_stop,
                                     encode_prompt)
from llm_teach.backends.hf_batching import plan_batches, token_budget
from llm_teach.models import default_device, load_model, load_tokenizer


@dataclass
class HFConfig:
    """Options of the in-process transformers backend."""

    dtype: str = "auto"  # auto = float32 on CPU, bfloat16 on GPU
    device: str | None = None  # None = cuda when available, else cpu
    batch_size: int = 16  # score(): sequences per forward pass
    # generate(): tokens in flight per batch (rows x (prompt + new tokens)); 0 = from the device's
    # total memory (hf_batching.token_budget)
    max_batch_tokens: int = 0


class HFBackend:
    name = "hf"

    def __init__(self, model: str, config: HFConfig | None = None, *, hf_model=None, tokenizer=None):
        """Load `model` (any spec of `llm_teach.models`), or wrap an already loaded one."""
        self.config = config or HFConfig()
        self.model = model
        self.device = self.config.device or default_device()
        self.lm = hf_model if hf_model is not None else load_model(model, self.config.dtype, self.device)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)

    # -- generate --------------------------------------------------------------------------
    @property
    def end_of_turn(self) -> str:
        return self.tokenizer.eos_token

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingConfig) -> list[list[Generation]]:
        """`n` samples per prompt in as few `model.generate` calls as memory allows
        (`hf_batching.plan_batches`). Each batch is seeded from `sampling.seed` and its own
        prompts and copy counts, which depend only on the inputs and the machine's total memory."""
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        budget = self.config.max_batch_tokens or token_budget(self.lm, self.device)
        outs: list[list[dict]] = [[] for _ in prompts]
        for batch in plan_batches([len(e) for e in encoded], n, sampling.max_new_tokens, budget):
            unique = [encoded[i] for i in batch.prompts]
            rows = self._generate_rows(unique, list(batch.copies), sampling,
                                       seed=_batch_seed(sampling.seed, [unique, list(batch.copies)]))
            at = 0
            for i, k in zip(batch.prompts, batch.copies):
                outs[i].extend(rows[at:at + k])
                at += k
        return [[Generation(prompt=p, backend=self.name, model=self.model, sampling=sampling.to_dict(), **out)
                 for out in row_outs] for p, row_outs in zip(prompts, outs)]

    def _generate_rows(self, unique: list[list[int]], copies: list[int], sampling: SamplingConfig,
                       seed: int) -> list[dict]:
        """`copies[j]` samples of prompt `unique[j]`, left-padded into one batch. Each prompt is
        prefilled once (all but its last token) and its KV cache copied to its rows, so n samples
        do not pay n prefills; `generate` then continues from that cache."""
        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in unique)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in unique], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in unique], device=self.device)
        index = torch.repeat_interleave(torch.arange(len(unique), device=self.device),
                                        torch.tensor(copies, device=self.device))
        cache = self._prefill(ids, mask, index) if width > 1 else None
        greedy = sampling.temperature <= 0
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=not greedy, pad_token_id=pad,
                      return_dict_in_generate=True, output_logits=sampling.logprobs)
        if not greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:  # the model's generation_config may carry sampling defaults: neutralize them
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if sampling.stop:  # transformers' StopStringCriteria: tensor ops per step, no per-row Python
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        torch.manual_seed(seed)
        out = self.lm.generate(input_ids=ids[index], attention_mask=mask[index], cache=cache, **kwargs)
        new = out.sequences[:, width:].tolist()
        logps = None
        if sampling.logprobs:
            steps = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # [rows, steps, V]
            logps = steps.gather(-1, out.sequences[:, width:, None]).squeeze(-1).tolist()
        eos = set(_as_list(self.lm.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        return [self._finish(tokens, logps[r] if logps else None, eos, sampling) for r, tokens in enumerate(new)]

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor):
        """The KV cache of every prompt but its last token, one row per sample (`index`).
        Positions as `generate` derives them from the mask, so the cache is the one it would build."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.config)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.lm.get_decoder()(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                              cache=cache, use_cache=True)
        cache.batch_select_indices(index)
        return cache

    def _finish(self, tokens: list[int], logps: list[float] | None, eos: set[int], sampling: SamplingConfig) -> dict:
        """Cut a row at EOS (dropping padding) and at the first stop string."""
        finish = "length"
        for k, t in enumerate(tokens):
            if t in eos:
                tokens, finish = tokens[:k], "stop"
                break
        logps = logps[: len(tokens)] if logps is not None else None
        text, cut = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), sampling.stop)
        finish = "stop" if cut else finish
        return dict(completion=text, finish_reason=finish, token_ids=tokens, logprobs=logps)

    # -- score -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], top_k: int = 0,
              tail: TailRequest | None = None) -> list[TokenLogprobs]:
        """Log-probs of each completion's tokens in one forward pass per batch.

        The completion is tokenized on its own and appended to the prompt tokens, so its token
        boundaries are exactly the ones returned. Only the completion positions go through the
        output layer: a 49k-vocabulary logits tensor for every prompt token would dominate
        memory for long prompts.
        """
        pairs = [(encode_prompt(self.tokenizer, p), self.tokenizer(c, add_special_tokens=False)["input_ids"])
                 for p, c in zip(prompts, completions, strict=True)]
        results: list[TokenLogprobs] = []
        decoder, head = self.lm.get_decoder(), self.lm.get_output_embeddings()
        if any(getattr(self.lm.config, a, None) for a in ("final_logit_softcapping", "logit_scale")):
            raise NotImplementedError(
                f"score() applies the output layer directly and does not yet support models whose "
                f"logits are soft-capped or scaled ({type(self.lm).__name__})"
            )
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(pairs), self.config.batch_size):
            batch = pairs[start:start + self.config.batch_size]
            seqs = [p + c for p, c in batch]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            for row, (p, c) in enumerate(batch):
                if not c:
                    results.append(TokenLogprobs([], [], [] if top_k else None))
                    continue
                # logits at position t predict token t+1: completion token j sits at len(p)+j.
                positions = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=self.device)
                logp = head(hidden[row, positions]).float().log_softmax(-1)
                targets = torch.tensor(c, device=self.device)
                chosen = logp.gather(-1, targets[:, None]).squeeze(-1).tolist()
                tops = None
                if top_k:
                    values, indices = logp.topk(top_k, dim=-1)
                    tops = [dict(zip(i.tolist(), v.tolist())) for i, v in zip(indices, values)]
                result = TokenLogprobs(token_ids=c, logprobs=chosen, top_k=tops)
                if tail is not None and top_k:
                    _add_tail(result, logp, top_k, tail)
                results.append(result)
        return results


def _add_tail(result: TokenLogprobs, logp: torch.Tensor, top_k: int, tail: TailRequest) -> None:
    """The tail of `tail` from the full log-probs [C, V] of one completion (exact: hf has them)."""
    from llm_teach.data.sparse_targets import sparse_from_logits

    g = torch.Generator(device=logp.device).manual_seed(_batch_seed(tail.seed, [result.token_ids]))
    target = sparse_from_logits(logp, top_k, tuple(tail.temperatures), tail.samples, tail.sample_temperature, g)
    result.log_tail = {t: target.log_tail[:, i].tolist() for i, t in enumerate(tail.temperatures)}
    if tail.samples:
        ids, lps = target.ids[:, top_k:].tolist(), target.logprobs[:, top_k:].tolist()
        result.tail_samples = [list(zip(i, v)) for i, v in zip(ids, lps)]


def _batch_seed(seed: int, encoded: list[list[int]]) -> int:
    digest = hashlib.sha256(repr((seed, encoded)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
