"""KDRL: GRPO plus knowledge distillation from a teacher on the student's own rollouts.

    loss = GRPO loss + beta_t * sum_{i,t} m_i,t w_i,t k(R_i,t) / N,
    R_t = log pi_T(o_t|q,o_<t) - log pi_theta(o_t|q,o_<t)

with the teacher detached, `k` one of the estimators of `losses.kdrl.kd_estimator` (k2 = R^2/2
by default: on on-policy samples its gradient is the reverse-KL gradient), beta_t linearly
annealed by default (`losses.kdrl.beta_schedule`), m the completion mask restricted by reward
(`losses.kdrl.reward_mask`; default: KD only on responses not known to be correct), and:

* N = all completion tokens of the generation batch, per rank and accumulation window (GRPO's
  "dapo" denominator, `losses.kdrl.kd_term`): masking responses out shrinks the term instead of
  re-weighting the tokens left. Summed over the micro-batches of a window (and averaged over
  ranks by DDP) the term is beta_t * (sum of kept k) / (completion tokens of the batch), which
  also carries the gradient-accumulation scaling.
* w = pi_theta / pi_old per token, detached and clipped to GRPO's [1-eps_low, 1+eps_high]
  (`losses.kdrl.importance_weights`): k2's gradient identity holds for samples of the CURRENT
  policy, and GRPO reuses rollouts (`num_iterations > 1`, `steps_per_generation` > gradient
  accumulation). On-policy (TRL keeps no old log-probs) w == 1 exactly. Truncated sampling
  (`top_p < 1`, `top_k > 0`) is REFUSED instead: TRL's old log-probs are the untruncated
  policy's, so no ratio to the real sampling distribution is available.

How it hooks into TRL (written against trl 1.16.0; the overrides are deliberately thin so they
survive upgrades, and none touches the reference-model slot, so GRPO's own `beta` KL to the
reference and LoRA (reference = adapter disabled) keep working as in plain GRPO):

* `_calculate_rewards`: remember the rewards, gathered over all ranks (a GRPO group can span
  ranks, so group masking needs the global view).
* `_generate_and_score_completions`: after TRL's rollout + scoring, add the teacher's per-token
  log-probs of the same token ids (no grad) and the per-response KD mask to the batch dict;
  TRL's shuffle/split carries them along with the other per-sample tensors.
* `_get_per_token_logps_and_entropies`: while `_compute_loss` runs, keep the student's per-token
  log-probs it computes, so the KD term reuses that forward instead of running a second one.
* `_compute_loss`: TRL's loss + the KD term; logs `kd_loss` (mean k over the kept tokens), `beta`
  (beta_t), and at generation `kd_masked_frac` (fraction of responses masked out of KD) and
  `kd_reward_unknown` (responses whose correctness reward is NaN: kept in KD), all over ranks.

The teacher is a local causal LM (scored directly over the student's token ids: exact and one
forward) or any `Backend` with `score()`, e.g. a vLLM server through the openai backend
(completions are detokenized and re-scored; a response whose re-tokenization differs from the
student's ids is left out of the KD term, and `kd_teacher_aligned_frac` says how often).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import trl

from llm_teach.errors import UserError
from llm_teach.config import check_fields, option
from llm_teach.trainers.model_loading import (check_teacher_url, load_student,
                                              make_teacher, prepare_frozen)
from llm_teach.trainers.hacking_watch import watch_callbacks
from llm_teach.trainers.train_config import TeacherBackend, lora_config
from llm_teach.trainers.teacher_config import TeacherConfig
from llm_teach.trainers.grpo import GRPOConfig, build_dataset, grpo_args, reward_functions
from llm_teach.trainers.losses.kdrl import (Estimator, beta_schedule, importance_weights, kd_estimator, kd_term,
                                            reward_mask)


@dataclass
class KDRLConfig(GRPOConfig, TeacherConfig):
    """GRPO + teacher KD on the student's rollouts (paper defaults for the KD schedule)."""

    teacher: str | None = option("Teacher: a model spec (teacher_backend=hf/vllm) or the served model name "
                                "(teacher_backend=openai). Must share the student's tokenizer.")
    teacher_backend: TeacherBackend = option("hf: load the teacher in-process and score the student's token ids "
                                            "directly; openai: score through an OpenAI-compatible server that "
                                            "returns prompt log-probs (vLLM); vllm: in-process vLLM.", "hf")
    teacher_batch_size: int = option("Rollouts per teacher forward (hf backend); each distinct prompt among "
                                    "them is run once.", 64)
    kd_estimator: Estimator = option("Per-token KL estimator: k1 (-R), k2 (R^2/2, reverse-KL gradient), "
                                    "k3 (e^R - R - 1).", "k2")
    kd_beta: float = option("KD coefficient beta_0 (KDRL, Xu et al. 2025, arXiv:2506.02208: 5e-3 at the start "
                            "of its annealing).", 5e-3)
    kd_beta_schedule: Literal["constant", "linear"] = option(
        "constant, or linear: beta_t = max(beta_0 - delta*t, beta_min). Default linear: KDRL's best recipe "
        "anneals the KL coefficient linearly from 5e-3 to 1e-3.", "linear")
    kd_beta_min: float = option("Floor of the linear schedule (KDRL's annealing end point: 1e-3).", 1e-3)
    kd_beta_delta: float = option("Decrease of beta per optimizer step in the linear schedule (5e-5: the floor "
                                  "at step 80; our choice of pace, the paper's 5e-3 -> 1e-3 end points fixed).",
                                  5e-5)
    kd_mask: Literal["none", "response", "group"] = option(
        "Reward-guided masking: none; response (KD only on responses not known to be correct: reward <= "
        "threshold, or NaN = ungraded); group (KD only on groups with no correct response). Default response: "
        "KDRL's best recipe masks the KD term of correctly answered responses.", "response")
    kd_mask_threshold: float = option("A response counts as correct when its correctness reward is > this.", 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, teacher_batch_size=">= 1", kd_beta=">= 0", kd_beta_min=">= 0", kd_beta_delta=">= 0")
        if not self.teacher:
            raise ValueError("kdrl needs a teacher (--teacher SPEC)")
        if self.teacher_backend == "openai" and not self.teacher_base_url:
            raise ValueError("teacher_backend openai needs teacher_base_url")
        check_teacher_url(self)
        if self.teacher_backend != "hf" and self.temperature != 1.0:
            raise ValueError("a served teacher scores at temperature 1; use temperature 1.0 or teacher_backend hf")
        if self.top_p < 1.0:
            raise ValueError("kdrl needs top_p 1.0: the KD term's importance ratio is to the untruncated policy "
                             "(TRL keeps no log-probs of the top-p sampler), so its gradient would be biased")


class KDRLTrainer(trl.GRPOTrainer):
    """`trl.GRPOTrainer` + a teacher term (see module docstring; trl 1.16.0 overrides:
    `_calculate_rewards`, `_generate_and_score_completions`, `_get_per_token_logps_and_entropies`,
    `_compute_loss`).

    Args:
        teacher: a causal LM sharing the student's tokenizer, or a `Backend` that can `score`.
        kd_estimator, kd_beta, kd_beta_schedule, kd_beta_min, kd_beta_delta, kd_mask,
        kd_mask_threshold: as in `KDRLConfig`.
        teacher_batch_size: rollouts per teacher forward.
        *args, **kwargs: `trl.GRPOTrainer`'s. The FIRST reward function must be the correctness
            reward: reward-guided masking reads it.
    """

    def __init__(self, *args, teacher, kd_estimator: str = "k2", kd_beta: float = 5e-3,
                 kd_beta_schedule: str = "linear", kd_beta_min: float = 1e-3, kd_beta_delta: float = 5e-5,
                 kd_mask: str = "response", kd_mask_threshold: float = 0.0, teacher_batch_size: int = 64, **kwargs):
        super().__init__(*args, **kwargs)
        if self.top_p < 1.0 or self.top_k:
            raise UserError("kdrl needs untruncated sampling (top_p 1, top_k 0): the KD importance ratio is to "
                            "the full policy")
        self.kd_estimator, self.kd_mask, self.kd_mask_threshold = kd_estimator, kd_mask, kd_mask_threshold
        self.kd_schedule = dict(beta0=kd_beta, kind=kd_beta_schedule, beta_min=kd_beta_min, delta=kd_beta_delta)
        self.teacher_batch_size = teacher_batch_size
        self._capture_student = False
        self._student_logps = None
        self._global_rewards = None
        if isinstance(teacher, torch.nn.Module):
            config = teacher.config.get_text_config()
            if getattr(config, "final_logit_softcapping", None):
                raise UserError("teachers with soft-capped logits are not supported yet")
            student_vocab = self.accelerator.unwrap_model(self.model).config.get_text_config().vocab_size
            # Padded vocabularies may differ in size; the real tokens are the shared prefix.
            self.common_vocab = min(len(self.processing_class), config.vocab_size, student_vocab)
            self.teacher = prepare_frozen(teacher, self)
        else:
            self.common_vocab = None
            self.teacher = teacher

    def kd_beta_at(self, step: int) -> float:
        return beta_schedule(step, **self.kd_schedule)

    # -- overrides ----------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._global_rewards = rewards  # [all ranks' completions, reward funcs], gathered by TRL
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        logps, valid = self._teacher_logps(inputs, output)
        output["teacher_per_token_logps"] = logps
        output["teacher_mask"] = valid.to(output["completion_mask"].dtype)
        # Reward-guided mask over ALL ranks' responses (groups may span ranks), then this rank's slice.
        group = self.num_generations if mode == "train" else self.num_generations_eval
        correctness = self._global_rewards[:, 0]
        keep = reward_mask(correctness, group, self.kd_mask, self.kd_mask_threshold)
        local = len(inputs)
        start = self.accelerator.process_index * local
        output["kd_mask"] = keep[start:start + local].to(logps.device)
        self._metrics[mode]["kd_masked_frac"].append(1.0 - keep.float().mean().item())
        # Ungraded responses (NaN correctness) keep their KD term; say how many there were.
        self._metrics[mode]["kd_reward_unknown"].append(float(torch.isnan(correctness).sum().item()))
        if self.common_vocab is None:
            aligned = self.accelerator.gather(valid.any(-1).float()).mean().item()
            self._metrics[mode]["kd_teacher_aligned_frac"].append(aligned)
        return output

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture_student:
            self._student_logps = result[0]
        return result

    def _compute_loss(self, model, inputs):
        self._capture_student, self._student_logps = True, None
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._capture_student = False
        student, self._student_logps = self._student_logps, None
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"] * inputs["teacher_mask"] * inputs["kd_mask"][:, None]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        per_token = kd_estimator(student, inputs["teacher_per_token_logps"], self.kd_estimator)
        beta = self.kd_beta_at(self.state.global_step)
        weights = importance_weights(student, inputs.get("old_per_token_logps"), self.epsilon_low,
                                     self.epsilon_high)
        # TRL's dapo denominator: completion tokens of the generation batch, per rank, rescaled to
        # one accumulation window (a window sees GA of the steps_per_generation micro-batches).
        num_tokens = inputs["num_items_in_batch"] / self.accelerator.num_processes
        if mode == "train":
            num_tokens = num_tokens * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss = loss + beta * kd_term(per_token, mask, weights, num_tokens)
        totals = self.accelerator.reduce(torch.stack([(per_token * mask).sum(), mask.sum()]).detach(), "sum")
        self._metrics[mode]["kd_loss"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        self._metrics[mode]["beta"].append(beta)
        return loss

    # -- teacher scoring ----------------------------------------------------------------------
    @torch.no_grad()
    def _teacher_logps(self, inputs, output) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher log-probs of the rollouts' completion tokens [B, C] and where they are valid."""
        if self.common_vocab is None:
            return self._backend_logps([x["prompt"] for x in inputs], output)
        prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
        prompt_mask, completion_mask = output["prompt_mask"], output["completion_mask"]
        teacher = self.accelerator.unwrap_model(self.teacher)
        head = teacher.get_output_embeddings()
        rows = []
        for s in range(0, completion_ids.size(0), self.teacher_batch_size):
            part = slice(s, s + self.teacher_batch_size)
            hidden = _completion_hidden(teacher, prompt_ids[part], prompt_mask[part], completion_ids[part],
                                        completion_mask[part])
            targets = completion_ids[part].clamp(max=self.common_vocab - 1)
            rows.append(_chunked_token_logps(head, hidden, targets, self.common_vocab, self.temperature))
        valid = completion_ids < self.common_vocab
        return torch.cat(rows), valid

    def _backend_logps(self, prompts, output) -> tuple[torch.Tensor, torch.Tensor]:
        completion_ids, mask = output["completion_ids"], output["completion_mask"]
        lengths = mask.sum(-1).tolist()
        rows = [completion_ids[i, :n].tolist() for i, n in enumerate(lengths)]
        texts = self.processing_class.batch_decode(rows, skip_special_tokens=False)
        scored = self.teacher.score(prompts, texts)
        logps = torch.zeros(completion_ids.shape, dtype=torch.float32, device=completion_ids.device)
        valid = torch.zeros(completion_ids.shape, dtype=torch.bool, device=completion_ids.device)
        for i, (row, result) in enumerate(zip(rows, scored, strict=True)):
            if list(result.token_ids) == row and row:
                logps[i, :len(row)] = torch.tensor(result.logprobs, dtype=torch.float32)
                valid[i, :len(row)] = True
        return logps, valid


def _completion_hidden(teacher, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """The teacher's last hidden states at the positions predicting each completion token [B, C, H].

    A GRPO batch holds every prompt num_generations times: each distinct prompt goes through the
    teacher once and its KV cache is copied to its rows, then only the completion tokens run.
    Positions and masks are the ones of one forward over prompt + completion called like TRL
    calls the student (input_ids + attention_mask, default positions), so a teacher equal to
    the student still gives R == 0 (up to float rounding of the split forward)."""
    from transformers import DynamicCache

    decoder = teacher.get_decoder()
    width = prompt_ids.size(1)
    keyed = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    unique, inverse = torch.unique(keyed, dim=0, return_inverse=True)
    cache = DynamicCache(config=teacher.config)
    prompt_out = decoder(input_ids=unique[:, :width], attention_mask=unique[:, width:], cache=cache, use_cache=True)
    first = prompt_out.last_hidden_state[inverse, -1:]  # the last prompt position predicts completion token 0
    if completion_ids.size(1) == 1:
        return first
    cache.batch_select_indices(inverse)
    rest = decoder(input_ids=completion_ids[:, :-1], cache=cache, use_cache=True,
                   attention_mask=torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1))
    return torch.cat([first, rest.last_hidden_state], dim=1)


def _chunked_token_logps(head, hidden, targets, vocab: int, temperature: float, chunk: int = 256):
    """log softmax(head(hidden)[..., :vocab] / T) at `targets`, `chunk` positions at a time, so
    [B, C, V] logits never exist at once for long completions."""
    parts = []
    for s in range(0, hidden.size(1), chunk):
        logits = head(hidden[:, s:s + chunk])[..., :vocab].float() / temperature
        parts.append(logits.log_softmax(-1).gather(-1, targets[:, s:s + chunk, None]).squeeze(-1))
    return torch.cat(parts, dim=1)


def build_trainer(cfg: KDRLConfig, out: Path, callbacks=None):
    import datasets

    from llm_teach.models import load_tokenizer

    rows = build_dataset(cfg)
    tokenizer = load_tokenizer(cfg.model)
    args = grpo_args(cfg, out)
    student = load_student(cfg)
    teacher = make_teacher(cfg, tokenizer)
    kd: dict[str, Any] = {k: getattr(cfg, k) for k in ("kd_estimator", "kd_beta", "kd_beta_schedule", "kd_beta_min",
                                                        "kd_beta_delta", "kd_mask", "kd_mask_threshold",
                                                        "teacher_batch_size")}
    return KDRLTrainer(model=student, reward_funcs=reward_functions(cfg)[0], args=args,
                       train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                       peft_config=lora_config(cfg), teacher=teacher, **kd,
                       callbacks=(callbacks or []) + watch_callbacks(
                           cfg, out, tokenizer, teacher if isinstance(teacher, torch.nn.Module) else None))
