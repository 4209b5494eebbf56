"""On-policy distillation (GKD, Agarwal et al. 2024, arXiv:2306.13649): `train --method gkd`.

Each optimizer micro-step, with probability `lmbda` the batch's completions are replaced by
the STUDENT's own samples (on-policy); otherwise, with `seq_kd`, by the teacher's samples, else
the dataset's completions are kept. The loss is the generalized JSD(beta) between the teacher's
and the student's next-token distributions at `temperature`, averaged over the completion
tokens::

    loss = mean_t JSD_beta(p_teacher(.|x, y<t) / T || p_student(.|x, y<t) / T)

Convention (TRL's, exactly; `losses.divergences.jsd`): M = beta * teacher + (1 - beta) * student,
JSD = beta * KL(teacher || M) + (1 - beta) * KL(student || M); beta = 0 is FORWARD KL,
KL(teacher || student), and beta = 1 is REVERSE KL, KL(student || teacher) (special-cased at
the end points as in `trl.experimental.gkd.GKDTrainer.generalized_jsd_loss`). No T^2 factor,
as in TRL; `temperature` is both the sampling and the loss temperature (as trl's
`DistillationTrainer` does; TRL's GKDTrainer samples at it but scores at T = 1).
tests/unit/test_gkd_parity.py checks the loss against trl 1.16's `generalized_jsd_loss`.

What is reused from TRL (1.16): the lmbda/seq_kd batch choice of `GKDTrainer.training_step`
(python `random`, seeded by the Trainer on every rank alike and restored on `--resume` from the
checkpoint's RNG state), `GKDTrainer.generate_on_policy_outputs` (sampling and the EOS/prompt
masking) and `unwrap_model_for_generation`. Why not the `GKDTrainer` class itself: its
`__init__` needs a local teacher MODEL and runs SFTTrainer's dataset machinery, and its
`compute_loss` materializes [B, L, V] logits of both models; ours projects both models' hidden
states a tile of completion rows at a time (`losses.tiled.TiledDistillLoss`, as `distill`), and
also takes a served teacher (top-k prompt log-probs + the tail mass, `losses.sparse`).

Batches share one layout, the one `generate` produces: [left-padded prompt | right-padded
completion], labels = completion ids (-100 elsewhere), plus `prompts`/`prompt_attention_mask`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from llm_teach.backends.base import encode_prompt
from llm_teach.config import check_fields, option
from llm_teach.errors import UserError
from llm_teach.trainers.hacking_watch import watch_callbacks
from llm_teach.trainers.losses.tiled import TiledDistillLoss
from llm_teach.trainers.model_loading import (check_teacher_url, load_student,
                                              make_teacher, prepare_frozen)
from llm_teach.trainers.records import is_records_file, load_training_problems, problem_prompt, read_records, require
from llm_teach.trainers.metric_log import MeanMetricsLog, trainer_args
from llm_teach.trainers.teacher_config import TeacherConfig
from llm_teach.trainers.train_config import TeacherBackend, lora_config


@dataclass
class GKDConfig(TeacherConfig):
    """GKD: JSD(beta) to a teacher on a mix of student-sampled and dataset completions."""

    teacher: str | None = option("Teacher: a model spec (teacher_backend hf) or a served model name "
                                "(openai/vllm). Must share the student's tokenizer.")
    teacher_backend: TeacherBackend = option("hf: local teacher, exact full distribution; openai/vllm: its top-k "
                                            "prompt log-probs of every completion plus the tail mass.", "hf")
    learning_rate: float = option("Peak learning rate (AdamW).", 2e-5)
    teacher_top_k: int = option("Served teacher: top-k log-probs per token (the rest is one tail bucket).", 20)
    lmbda: float = option("Fraction of micro-batches trained on the student's own samples (GKD's lambda; "
                          "0 = the dataset's completions only, 1 = fully on-policy).", 0.5)
    beta: float = option("Generalized JSD interpolation (TRL convention): 0 = forward KL(teacher||student), "
                         "1 = reverse KL(student||teacher).", 0.5)
    temperature: float = option("Sampling temperature of the student (and teacher) completions and of both "
                                "distributions in the loss.", 0.9)
    max_new_tokens: int = option("Maximum new tokens per sampled completion.", 128)
    seq_kd: bool = option("Off-policy batches use the TEACHER's sampled completions (sequence-level KD) instead "
                          "of the dataset's.", False)
    chunk_size: int = option("Completion rows per lm-head tile of the loss; 0 = sized by the vocabulary.", 0)
    max_length: int = option("Truncate a dataset prompt + completion to this many tokens.", 1024)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, lmbda="[0, 1]", beta="[0, 1]", temperature="> 0", max_new_tokens=">= 1",
                     chunk_size=">= 0", max_length=">= 2", teacher_top_k=">= 1")
        if not self.teacher:
            raise ValueError("gkd needs a teacher (--teacher SPEC)")
        if self.teacher_backend == "openai" and not self.teacher_base_url:
            raise ValueError("teacher_backend openai needs teacher_base_url")
        check_teacher_url(self)
        if self.teacher_backend != "hf" and (self.temperature != 1.0 or self.seq_kd):
            raise ValueError("a served teacher gives top-k log-probs at temperature 1 and cannot sample for "
                             "seq_kd here: use temperature 1.0 and seq_kd false, or teacher_backend hf")


# -- data ---------------------------------------------------------------------------------------


def build_rows(cfg: GKDConfig, tokenizer) -> list[dict[str, Any]]:
    """Token ids of every prompt and its dataset completion. Problems: the evaluation prompt and
    the worked solution (or `\\boxed{answer}`); records: `{prompt, completion}` text or chat
    (a JSONL file whose first record has a `question` is a problems file)."""
    pairs = []
    records = read_records(cfg.data, cfg.limit) if is_records_file(cfg.data) else []
    if records and "question" in records[0][1]:
        records = []  # a problems file
    if records:
        for where, rec in records:
            require(rec, ("prompt", "completion"), where, "gkd")
            if not isinstance(rec["completion"], str):
                raise UserError(f"{where}: 'completion' must be text")
            prompt = [{"role": "user", "content": rec["prompt"]}] if isinstance(rec["prompt"], str) else rec["prompt"]
            pairs.append((where, prompt, rec["completion"]))
    else:
        for p in load_training_problems(cfg):
            completion = p.solution or f"The answer is \\boxed{{{p.answer}}}."
            pairs.append((p.id, problem_prompt(p.question, cfg.template), completion))
    rows = []
    for where, prompt, completion in pairs:
        try:
            prompt_ids = encode_prompt(tokenizer, prompt)
        except Exception as exc:  # a malformed chat list
            raise UserError(f"{where}: bad prompt ({exc})") from None
        completion_ids = tokenizer(completion + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
        completion_ids = completion_ids[:max(1, cfg.max_length - len(prompt_ids))]
        rows.append({"prompt_ids": prompt_ids, "completion_ids": completion_ids, "index": len(rows)})
    return rows


class GKDCollator:
    """[left-padded prompt | right-padded completion] rows, the layout `generate` returns."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        p_width = max(len(r["prompt_ids"]) for r in rows)
        c_width = max(len(r["completion_ids"]) for r in rows)
        n = len(rows)
        prompts = torch.full((n, p_width), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((n, p_width), dtype=torch.long)
        completions = torch.full((n, c_width), self.pad_id, dtype=torch.long)
        completion_mask = torch.zeros((n, c_width), dtype=torch.long)
        for i, r in enumerate(rows):
            p, c = r["prompt_ids"], r["completion_ids"]
            prompts[i, p_width - len(p):] = torch.tensor(p)
            prompt_mask[i, p_width - len(p):] = 1
            completions[i, :len(c)] = torch.tensor(c)
            completion_mask[i, :len(c)] = 1
        input_ids = torch.cat([prompts, completions], 1)
        labels = torch.cat([torch.full_like(prompts, -100), completions.masked_fill(completion_mask == 0, -100)], 1)
        return {"input_ids": input_ids, "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
                "labels": labels, "prompts": prompts, "prompt_attention_mask": prompt_mask,
                "index": torch.tensor([r["index"] for r in rows])}


# -- trainer ------------------------------------------------------------------------------------


def last_hidden(model, input_ids, attention_mask) -> torch.Tensor:
    """Final hidden states [B, L-1, H] at the positions predicting tokens 1..L-1 (position ids
    from the attention mask, so left padding does not shift them)."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1][:, :-1]


def make_loss(beta: float, temperature: float, chunk_size: int = 0, served: bool = False) -> TiledDistillLoss:
    """GKD's loss module: generalized JSD(beta) at `temperature`, mean over completion tokens.
    TRL's GKD loss has no T^2 factor; `DistillLoss` applies one, so lambda_kd = 1/T^2 cancels it.
    A served teacher's top-k keeps its tail bucket at T = 1."""
    return TiledDistillLoss(tile_rows=chunk_size or None, divergence="jsd", jsd_beta=beta, temperature=temperature,
                            lambda_kd=1.0 / temperature ** 2, tail_temperature=1.0 if served else None)


def local_teacher(teacher, head, inputs) -> dict[str, Any]:
    """A local teacher's side of the loss: hidden states + lm-head (projected per tile: exact)."""
    return {"teacher_hidden": last_hidden(teacher, inputs["input_ids"], inputs["attention_mask"]),
            "teacher_head": head}


def gkd_loss(loss: TiledDistillLoss, model, head, inputs: dict[str, torch.Tensor], teacher_inputs):
    """The GKD loss of one batch (layout: `GKDCollator`): the student's hidden state at position
    t predicts token t+1, scored where `labels[:, t+1] != -100` (the completion);
    `teacher_inputs(inputs, mask)` gives the teacher keywords of `TiledDistillLoss` in the same
    frame (plus an optional `teacher_mask` of rows it could score)."""
    hidden = last_hidden(model, inputs["input_ids"], inputs["attention_mask"])
    targets = inputs["input_ids"][:, 1:]
    mask = (inputs["labels"][:, 1:] != -100).float()
    teacher = dict(teacher_inputs(inputs, mask))
    if "teacher_mask" in teacher:
        mask = mask * teacher.pop("teacher_mask")
    return loss(hidden, head, mask, targets, **teacher)


class GKDTrainer(MeanMetricsLog, Trainer):
    """`transformers.Trainer` with GKD's batch choice and loss (module docstring).

    Args:
        teacher: a frozen causal LM sharing the student's tokenizer, or a `Backend` that can `score`.
        loss: the `TiledDistillLoss` (divergence jsd, beta, temperature).
        lmbda, seq_kd, generation_kwargs: as in `GKDConfig`; `prompts`: each row's prompt, for
            a served teacher.
    """

    def __init__(self, *args, teacher, loss: TiledDistillLoss, lmbda: float, seq_kd: bool,
                 generation_kwargs: dict[str, Any], prompts: list | None = None, top_k: int = 20, **kwargs):
        super().__init__(*args, **kwargs)
        from transformers import GenerationConfig

        self.gkd_loss, self.lmbda, self.seq_kd, self.top_k, self.prompts = loss, lmbda, seq_kd, top_k, prompts
        self.model_accepts_loss_kwargs = False  # our loss is a per-micro-batch mean (as distill's)
        self.generation_kwargs = {**generation_kwargs, "pad_token_id": self.processing_class.pad_token_id}
        self.generation_config = GenerationConfig(**self.generation_kwargs)
        eos = getattr(self.accelerator.unwrap_model(self.model).generation_config, "eos_token_id", None)
        self.generation_config.eos_token_id = eos if eos is not None else self.processing_class.eos_token_id
        self.teacher = prepare_frozen(teacher, self) if isinstance(teacher, torch.nn.Module) else teacher
        self._metrics: dict[str, list[float]] = {"kd_loss": [], "on_policy": [], "completion_tokens": []}

    def training_step(self, model, inputs, num_items_in_batch=None):
        from trl.experimental.gkd import GKDTrainer as TRLGKD
        from trl.models.utils import unwrap_model_for_generation

        on_policy = random.random() <= self.lmbda  # TRL's draw, same on every rank (same seed)
        source = model if on_policy else self.teacher if self.seq_kd else None
        if source is not None:
            with unwrap_model_for_generation(source, self.accelerator, generation_kwargs=self.generation_kwargs,
                                             gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs
                                             ) as unwrapped:
                ids, attention, labels = TRLGKD.generate_on_policy_outputs(unwrapped, inputs, self.generation_config)
            inputs = {**inputs, "input_ids": ids, "attention_mask": attention, "labels": labels}
        # mean over ranks: 0 or 1 unless the ranks disagreed on the draw
        self._metrics["on_policy"].append(self.accelerator.reduce(torch.tensor(float(on_policy)), "mean").item())
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        result = gkd_loss(self.gkd_loss, model, head, inputs, self.teacher_inputs)
        stats = self.accelerator.reduce(torch.stack([result.kd * result.num_tokens, result.num_tokens]).detach(), "sum")
        kd, tokens = (stats[0] / stats[1].clamp(min=1.0)).item(), stats[1].item()
        self._metrics["kd_loss"].append(kd)
        self._metrics["completion_tokens"].append(tokens)
        return (result.loss, None) if return_outputs else result.loss

    @torch.no_grad()
    def teacher_inputs(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, Any]:
        """The local teacher's hidden states and lm-head (the loss projects them per tile: its
        exact full distribution), or a served teacher's top-k with its tail mass."""
        if isinstance(self.teacher, torch.nn.Module):
            return local_teacher(self.teacher, self.accelerator.unwrap_model(self.teacher).get_output_embeddings(),
                                 inputs)
        from llm_teach.trainers.gkd_served import served_teacher_inputs

        prompts = [self.prompts[i] for i in inputs["index"].tolist()]
        return served_teacher_inputs(self.teacher, self.processing_class, prompts, inputs, mask, self.top_k)


def build_trainer(cfg: GKDConfig, out: Path, callbacks=None):
    import datasets

    from llm_teach.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    if tokenizer.pad_token_id is None:
        raise UserError(f"{cfg.model}: the tokenizer has no pad token")
    args = trainer_args(cfg, out)
    rows = build_rows(cfg, tokenizer)
    student = load_student(cfg)
    teacher = make_teacher(cfg, tokenizer)
    loss = make_loss(cfg.beta, cfg.temperature, cfg.chunk_size, served=cfg.teacher_backend != "hf")
    model = student
    if cfg.lora_r:
        from peft import get_peft_model

        model = get_peft_model(student, lora_config(cfg))
    generation = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "do_sample": True,
                  "top_k": 0, "top_p": 1.0, "use_cache": not cfg.gradient_checkpointing}
    prompts = None if cfg.teacher_backend == "hf" else _prompts(cfg, tokenizer, rows)
    extra = watch_callbacks(cfg, out, tokenizer, teacher if isinstance(teacher, torch.nn.Module) else None)
    return GKDTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                      data_collator=GKDCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                      callbacks=(callbacks or []) + extra, teacher=teacher, loss=loss, lmbda=cfg.lmbda,
                      seq_kd=cfg.seq_kd, generation_kwargs=generation, prompts=prompts, top_k=cfg.teacher_top_k)


def _prompts(cfg: GKDConfig, tokenizer, rows) -> list[str]:
    """Each row's prompt as the exact text its ids decode to, for a served teacher's scoring."""
    return [tokenizer.decode(r["prompt_ids"], skip_special_tokens=False) for r in rows]
