"""Logit distillation (SSB's trainer; sequence-level and GKD-style KD on teacher completions).

The student sees the student prompt and matches the teacher's next-token distribution at every
token of the teacher's completion (SSB: the teacher saw a hinted prompt)::

    loss = lambda_kd * T^2 * D(teacher || student) + lambda_ce * CE,   D in {forward KL, reverse KL, JSD(beta)}

Teacher distributions come from
* a stored top-k logit file: records `{prompt, teacher_prompt, completion, logits_ref}` with
  `logits_ref` pointing into a `logit_store` (the completion's token ids are the store's, i.e.
  exactly what the teacher scored);
* or online: a local teacher (`teacher_backend: hf`) run on teacher_prompt + completion every
  step (full vocabulary with `teacher_top_k: 0`, else its top-k); a served teacher
  (`openai`/`vllm`) scores every record's top-k once, into OUT/teacher_logits, before training.

Online completions end with the end-of-turn token (so the student learns to stop) and plain-text
prompts go through the chat template unless `chat: false` (`records.end_turns`).

Why a `transformers.Trainer` subclass and not TRL's: `trl.DistillationTrainer` and
`trl.experimental.gkd.GKDTrainer` (trl 1.16) generate on-policy and run a teacher MODEL on the
student's own prompt; neither reads an offline top-k store nor lets the teacher condition on a
different (hinted) prompt than the student. Only `compute_loss` (+ `log`, for the kd/ce
metrics) is overridden; batching, accumulation, checkpoints, DDP/DeepSpeed stay the Trainer's.

Alignment (the classic bug is shifting twice): everything is in the COMPLETION frame. For
completion token j of a row with a P-token prompt, the student's prediction is the hidden state
at position P-1+j (gathered, not shifted), the target is input_ids[P+j], and the teacher tensors
at j are the teacher's distribution for that same token (stored per completion token, or
gathered at teacher position P_t-1+j). `losses.tiled.TiledDistillLoss` never shifts; it drops
the masked positions, flattens the batch's completion rows and projects BOTH models' hidden
states through their lm-heads one tile of rows at a time, so neither model's [B, C, V] logits
(nor the online teacher's log-softmax) ever exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import logging
from typing import Any, Literal

import torch
from transformers import Trainer

from llm_teach.backends.base import encode_prompt
from llm_teach.data.logit_store import TopKLogitStore, append_scored, open_writer, tail_request
from llm_teach.data.sparse_targets import loss_inputs, store_tail_problem
from llm_teach.errors import UserError
from llm_teach.config import check_fields, option
from llm_teach.trainers.model_loading import (check_teacher_url, load_student,
                                              make_teacher, prepare_frozen)
from llm_teach.trainers.records import end_turns, is_records_file, read_records, require
from llm_teach.trainers.hacking_watch import watch_callbacks
from llm_teach.trainers.metric_log import MeanMetricsLog, trainer_args
from llm_teach.trainers.sparse_accuracy import sparse_teacher_warning
from llm_teach.trainers.teacher_config import TeacherConfig
from llm_teach.trainers.train_config import TeacherBackend, lora_config
from llm_teach.trainers.losses.distill import Divergence
from llm_teach.trainers.losses.tiled import TiledDistillLoss

log = logging.getLogger(__name__)

Records = list[tuple[str, dict[str, Any]]]  # (where, record), as `read_records` returns them


@dataclass
class DistillConfig(TeacherConfig):
    """Distillation from stored top-k teacher log-probs or an online teacher."""

    learning_rate: float = option("Peak learning rate (AdamW).", 2e-5)
    teacher: str | None = option("Online teacher (model spec, or served model name) for records without "
                                "logits_ref. Must share the student's tokenizer.")
    teacher_backend: TeacherBackend = option("hf: run the teacher in-process every step; openai/vllm: score every "
                                            "record's top-k once through the backend, into OUT/teacher_logits.",
                                            "hf")
    teacher_top_k: int = option("Online teacher support: 0 = full vocabulary (hf only, exact), k = its top-k "
                               "(a served teacher needs k > 0; 20 when left at 0).", 0)
    logit_store: str | None = option("Top-k store directory to use for every record's logits_ref (default: the "
                                    "ref's own 'store', or a 'logits' folder next to the records file).")
    divergence: Divergence = option("forward_kl = KL(teacher||student) (Hinton KD), reverse_kl = "
                                   "KL(student||teacher), jsd = generalized JSD(jsd_beta).", "forward_kl")
    jsd_beta: float = option("JSD mixture weight of the teacher (0 -> forward KL, 1 -> reverse KL).", 0.5)
    temperature: float = option("Softening temperature T of both distributions (the loss is scaled by T^2).", 1.0)
    lambda_kd: float = option("Weight of the distillation term.", 1.0)
    lambda_ce: float = option("Weight of the cross-entropy on the completion tokens (0 = pure KD).", 0.0)
    sparse_target: Literal["tail", "renormalize"] = option(
        "Top-k teacher: tail = keep the teacher's mass outside its top-k (a tail bucket, or the store's "
        "sampled tail tokens; needs the store's tail at `temperature`, T=1 always works); renormalize = the "
        "pre-v2 behaviour, top-k renormalized over itself (+87% forward KL at T=2 from top-32, issue 11).", "tail")
    student_renorm: bool = option("sparse_target=renormalize: renormalize the student on the teacher's top-k too "
                                 "(needed for reverse KL there; ignores off-support mass).", False)
    chunk_size: int = option("Completion rows (the batch's valid positions, flattened) per lm-head tile of the "
                            "loss; 0 = sized by the vocabulary (min(256, 2^25 // V) rows).", 0)
    max_length: int = option("Truncate student prompt + completion to this many tokens (the completion's "
                            "tail is cut).", 1024)
    chat: bool = option("Send plain-text prompts (and teacher prompts) as a user turn through the tokenizer's chat "
                       "template, the format evaluation prompts the model in; false keeps them raw. No effect "
                       "without a template.", True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, teacher_top_k=">= 0", jsd_beta="[0, 1]", temperature="> 0", lambda_kd=">= 0",
                           lambda_ce=">= 0", chunk_size=">= 0", max_length=">= 1")
        if self.teacher_backend == "openai" and self.teacher and not self.teacher_base_url:
            raise ValueError("teacher_backend openai needs teacher_base_url")
        if self.student_renorm and self.sparse_target == "tail":
            raise ValueError("student_renorm needs sparse_target: renormalize (a teacher with its tail needs none)")
        check_teacher_url(self)


# -- records -> tokenized rows ---------------------------------------------------------------


def _resolve_store(ref: dict[str, Any], cfg: DistillConfig, where: str) -> str:
    candidates = [Path(cfg.logit_store)] if cfg.logit_store else []
    if isinstance(ref.get("store"), str):
        candidates.append(Path(ref["store"]))
    candidates.append(Path(cfg.data).parent / "logits")  # records.jsonl + logits/ moved together
    for c in candidates:
        if (c / "meta.json").is_file():
            return str(c)
    raise UserError(f"{where}: logit store not found (tried {', '.join(map(str, candidates))}); "
                    "set logit_store: DIR")


def read_distill_records(cfg: DistillConfig) -> tuple[Records, str]:
    """The records of `cfg.data`, read once and checked (keys and value types), and the teacher
    mode ("store" or "online"). Nothing is tokenized, scored or written yet, so a bad record is a
    one-line error before any work."""
    if not is_records_file(cfg.data):
        raise UserError(f"distill needs a JSONL file of {{prompt, teacher_prompt, completion, logits_ref}} "
                        f"records, not '{cfg.data}'")
    records = read_records(cfg.data, cfg.limit)
    with_refs = sum("logits_ref" in r for _, r in records)
    if with_refs not in (0, len(records)):
        raise UserError(f"{cfg.data}: {with_refs} of {len(records)} records have logits_ref; all or none must")
    mode = "store" if with_refs else "online"
    if mode == "online" and not cfg.teacher:
        raise UserError(f"{cfg.data}: records have no logits_ref; give a teacher (--teacher SPEC) to score them")
    for where, rec in records:
        require(rec, ("prompt",) + (("logits_ref",) if mode == "store" else ("completion",)), where, "distill")
        _prompt(rec["prompt"], where, "prompt")
        if mode == "store":
            ref = rec["logits_ref"]
            if not isinstance(ref, dict) or not {"offset", "length"} <= set(ref):
                raise UserError(f"{where}: 'logits_ref' must be an object with offset and length (and store, key)")
        else:
            if not isinstance(rec["completion"], str):
                raise UserError(f"{where}: 'completion' must be text")
            _prompt(rec.get("teacher_prompt", rec["prompt"]), where, "teacher_prompt")
    return records, mode


def build_rows(cfg: DistillConfig, records: Records, mode: str, tokenizer, vocab_size: int) -> list[dict[str, Any]]:
    """Tokenized rows of records checked by `read_distill_records`. Rows carry both views:
    `input_ids` = student prompt + completion, and the teacher's prompt + completion (online)
    or the store position of the teacher's top-k rows (store)."""
    stores: dict[str, TopKLogitStore] = {}
    rows = []
    for where, rec in records:
        prompt_ids = encode_prompt(tokenizer, rec["prompt"])
        row = {"input_ids": [], "prompt_len": len(prompt_ids), "store": "", "offset": -1,
               "teacher_input_ids": [], "teacher_prompt_len": 0}
        if mode == "store":
            ref = rec["logits_ref"]
            row["store"] = _resolve_store(ref, cfg, where)
            store = stores.setdefault(row["store"], TopKLogitStore(row["store"]))
            problem = store_tail_problem(store.meta, cfg.temperature) if cfg.sparse_target == "tail" else None
            if problem:
                raise UserError(f"{where}: {row['store']}: {problem}")
            try:
                stored = store.get(ref)
            except (KeyError, ValueError) as exc:
                raise UserError(f"{where}: bad logits_ref ({exc})") from None
            if len(stored.topk_ids) and int(stored.topk_ids.max()) >= vocab_size:
                raise UserError(f"{where}: the stored teacher top-k has token ids >= the student's vocabulary "
                                f"({vocab_size}): the teacher used another tokenizer")
            completion = [int(t) for t in stored.token_ids]
            row["offset"] = int(ref["offset"])
        else:
            completion = tokenizer(rec["completion"], add_special_tokens=False)["input_ids"]
            teacher_ids = encode_prompt(tokenizer, rec.get("teacher_prompt", rec["prompt"]))
            row["teacher_prompt_len"] = len(teacher_ids)
        room = cfg.max_length - len(prompt_ids)
        if room < 1:
            raise UserError(f"{where}: the prompt alone has {len(prompt_ids)} tokens, over max_length {cfg.max_length}")
        completion = completion[:room]
        if not completion:
            raise UserError(f"{where}: empty completion")
        row["input_ids"] = prompt_ids + completion
        if mode == "online":
            row["teacher_input_ids"] = teacher_ids + completion
        rows.append(row)
    return rows


def _prompt(value: Any, where: str, key: str):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return value
    raise UserError(f"{where}: '{key}' must be text or a list of {{role, content}} messages")


def score_into_store(backend, cfg: DistillConfig, records: Records, root: Path, batch: int = 16) -> list[dict]:
    """Served teacher: top-k log-probs of every record's completion, once, into the store at
    `root`. Resumable (records already in the store are not scored again); returns each
    record's `logits_ref`, in order."""
    k = cfg.teacher_top_k or 20
    temps = sorted({1.0, cfg.temperature}) if cfg.sparse_target == "tail" else []
    with open_writer(root, k=k, model=cfg.teacher, tail_temperatures=temps) as writer:
        todo = [(str(i), r) for i, (_, r) in enumerate(records) if str(i) not in writer]
        for s in range(0, len(todo), batch):
            part = todo[s:s + batch]
            scored = backend.score([r.get("teacher_prompt", r["prompt"]) for _, r in part],
                                   [r["completion"] for _, r in part], top_k=k, **tail_request(writer))
            for (key, _), result in zip(part, scored, strict=True):
                append_scored(writer, key, result)
        return [writer.ref(str(i)) for i in range(len(records))]


# -- batches ----------------------------------------------------------------------------------


class DistillCollator:
    """Pads rows and lays the teacher out in the completion frame ([B, C_max, ...])."""

    def __init__(self, pad_id: int, temperature: float | None = None):
        self.pad_id = pad_id
        self.temperature = temperature  # None: renormalized top-k; else the tail at this loss temperature
        self.stores: dict[str, TopKLogitStore] = {}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(r["input_ids"]) - r["prompt_len"] for r in rows]
        width, c_max = max(len(r["input_ids"]) for r in rows), max(lengths)
        batch = _pad([r["input_ids"] for r in rows], width, self.pad_id)
        j = torch.arange(c_max)
        mask = (j[None, :] < torch.tensor(lengths)[:, None]).float()
        prompt_len = torch.tensor([r["prompt_len"] for r in rows])
        positions = (prompt_len[:, None] - 1 + j[None, :]).clamp(max=width - 1)
        targets = torch.where(mask.bool(), batch["input_ids"].gather(1, (positions + 1).clamp(max=width - 1)), -100)
        out = {**batch, "positions": positions, "completion_mask": mask, "targets": targets}
        if rows[0]["store"]:
            parts: dict[str, list[torch.Tensor]] = {}
            for r, n in zip(rows, lengths):
                store = self.stores.setdefault(r["store"], TopKLogitStore(r["store"]))
                rec = store.get({"offset": r["offset"], "length": n})
                if self.temperature is None:
                    inputs = {"teacher_topk_ids": torch.from_numpy(rec.topk_ids[:, :store.k].astype("int64")),
                              "teacher_topk_logprobs": torch.from_numpy(rec.topk_logprobs[:, :store.k].astype("float32"))}
                else:
                    inputs = loss_inputs(store.meta, rec.topk_ids, rec.topk_logprobs, rec.log_tail, self.temperature)
                for name, value in inputs.items():
                    parts.setdefault(name, []).append(value)
            for name, values in parts.items():
                out[name] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True)
        else:
            t_width = max(len(r["teacher_input_ids"]) for r in rows)
            teacher = _pad([r["teacher_input_ids"] for r in rows], t_width, self.pad_id)
            t_len = torch.tensor([r["teacher_prompt_len"] for r in rows])
            out["teacher_input_ids"] = teacher["input_ids"]
            out["teacher_attention_mask"] = teacher["attention_mask"]
            out["teacher_positions"] = (t_len[:, None] - 1 + j[None, :]).clamp(max=t_width - 1)
        return out


def _pad(seqs: list[list[int]], width: int, pad: int) -> dict[str, torch.Tensor]:
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        attention[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": attention}


# -- trainer ----------------------------------------------------------------------------------


def _gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [B, L, H] at positions [B, C] -> [B, C, H]."""
    return hidden.gather(1, positions[..., None].expand(-1, -1, hidden.size(-1)))


def completion_hidden(model, input_ids, attention_mask, positions) -> torch.Tensor:
    """Final hidden states (after the last norm) at the positions predicting the completion.
    Goes through the model's own forward (so DDP/DeepSpeed hooks run) with logits_to_keep=1."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                logits_to_keep=1, use_cache=False)
    return _gather_positions(out.hidden_states[-1], positions)


class DistillTrainer(MeanMetricsLog, Trainer):
    """`transformers.Trainer` with the distillation loss (see module docstring).

    Args:
        loss: the `TiledDistillLoss` to minimize (its `teacher_top_k` applies to the online teacher).
        teacher: online teacher model (None when batches carry a stored top-k).
    """

    def __init__(self, *args, loss: TiledDistillLoss, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill_loss = loss
        # Our loss is already a mean over the micro-batch: let the Trainer divide it by the
        # accumulation steps (it skips that for models whose forward takes loss kwargs).
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, list[float]] = {"kd_loss": [], "ce_loss": [], "completion_tokens": []}
        self.teacher = prepare_frozen(teacher, self) if teacher is not None else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        hidden = completion_hidden(model, inputs["input_ids"], inputs["attention_mask"], inputs["positions"])
        student = self.accelerator.unwrap_model(model)
        # The lm-head MODULE, not its weight: under ZeRO-3 the weight is gathered only in its forward.
        result = self.distill_loss(hidden, student.get_output_embeddings(), inputs["completion_mask"],
                                   inputs["targets"], **self.teacher_inputs(inputs))
        stats = self.accelerator.reduce(torch.stack([result.kd * result.num_tokens, result.ce * result.num_tokens,
                                                     result.num_tokens]).detach(), "sum")
        kd, ce, tokens = torch.cat([stats[:2] / stats[2].clamp(min=1.0), stats[2:]]).tolist()  # one device sync
        self._metrics["kd_loss"].append(kd)
        self._metrics["ce_loss"].append(ce)
        self._metrics["completion_tokens"].append(tokens)
        return (result.loss, None) if return_outputs else result.loss

    @torch.no_grad()
    def teacher_inputs(self, inputs) -> dict[str, Any]:
        """The teacher side of the loss: the stored top-k, or the online teacher's final hidden
        states at the same completion tokens and its lm-head module (the loss projects them a
        tile at a time, cuts/pads them to the student's vocabulary and takes the top-k if asked;
        the module, not its weight, so ZeRO-3 gathers it in its own forward)."""
        if "teacher_topk_ids" in inputs:
            keys = ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_log_tail", "teacher_sample_log_weights")
            return {k: inputs[k] for k in keys if k in inputs}
        hidden = completion_hidden(self.teacher, inputs["teacher_input_ids"], inputs["teacher_attention_mask"],
                                   inputs["teacher_positions"])
        return {"teacher_hidden": hidden,
                "teacher_head": self.accelerator.unwrap_model(self.teacher).get_output_embeddings()}


def build_trainer(cfg: DistillConfig, out: Path, callbacks=None):
    import datasets

    from llm_teach.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    args = trainer_args(cfg, out)
    records, mode = read_distill_records(cfg)
    records = end_turns(records, mode == "online", cfg.chat, tokenizer)
    if mode == "online" and cfg.teacher_backend != "hf":
        cfg, records = _score_with_backend(cfg, out, records, tokenizer)
        mode = "store"
    student = load_student(cfg)
    rows = build_rows(cfg, records, mode, tokenizer, student.config.get_text_config().vocab_size)
    teacher = make_teacher(cfg, tokenizer) if mode == "online" else None
    sparse = mode == "store" or cfg.teacher_top_k > 0
    warning = sparse_teacher_warning(cfg.divergence, cfg.jsd_beta) if sparse else None
    if warning:
        log.warning(warning)
    tail = cfg.temperature if cfg.sparse_target == "tail" else None
    loss = TiledDistillLoss(tile_rows=cfg.chunk_size or None, teacher_top_k=cfg.teacher_top_k,
                            divergence=cfg.divergence, jsd_beta=cfg.jsd_beta, temperature=cfg.temperature,
                            lambda_kd=cfg.lambda_kd, lambda_ce=cfg.lambda_ce, student_renorm=cfg.student_renorm,
                            tail_temperature=tail)
    model = student
    if cfg.lora_r:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if cfg.qlora:
            student = prepare_model_for_kbit_training(student, use_gradient_checkpointing=cfg.gradient_checkpointing)
        model = get_peft_model(student, lora_config(cfg))
    callbacks = (callbacks or []) + watch_callbacks(cfg, out, tokenizer, teacher)
    trainer = DistillTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             data_collator=DistillCollator(tokenizer.pad_token_id, tail), processing_class=tokenizer,
                             callbacks=callbacks, loss=loss, teacher=teacher)
    trainer.run_warnings = [warning] if warning else []  # lifecycle.run records them in the manifest
    return trainer


def _score_with_backend(cfg: DistillConfig, out: Path, records: Records, tokenizer) -> tuple[DistillConfig, Records]:
    """Served teacher: the main process scores every record's top-k into OUT/teacher_logits and
    writes the records again with their logits_ref (OUT/teacher_logits/records.jsonl, which the
    other ranks read); every rank then trains from that store."""
    import dataclasses

    from accelerate import PartialState

    from llm_teach.data.jsonl import write_jsonl_atomic

    root, state = out / "teacher_logits", PartialState()
    with state.main_process_first():
        if state.is_main_process:
            refs = score_into_store(make_teacher(cfg, tokenizer), cfg, records, root)
            records = [(where, {**r, "logits_ref": ref}) for (where, r), ref in zip(records, refs, strict=True)]
            write_jsonl_atomic(root / "records.jsonl", [r for _, r in records])
        else:
            records = read_records(str(root / "records.jsonl"), None)
    return dataclasses.replace(cfg, data=str(root / "records.jsonl"), limit=None, logit_store=str(root)), records
