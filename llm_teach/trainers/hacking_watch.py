"""Teacher-hacking watch for distill, gkd and kdrl (Tiapkin et al. 2025, "On Teacher Hacking in
Language Model Distillation", arXiv:2502.02671).

A student can overfit its teacher's flaws while the distillation loss keeps falling. Every
`hacking_watch_steps` optimizer steps the watch greedily answers held-out problems
(`hacking_eval_data`) with the student and logs to metrics.jsonl:

* the PROXY, `hacking_proxy`: mean per-token forward KL(teacher || student) on those answers;
* the GOLDEN signal: `hacking_accuracy` (our verifier, `llm_teach.grading`) and, with
  `reference`, `hacking_reference_kl`: KL(reference || student) to a stronger model.

`teacher_hacking` (a pure function) fires when, for `hacking_patience` consecutive evaluations,
the proxy fell while the golden signal got worse (accuracy dropped, or it did not rise while
the reference divergence grew). Then the watch warns (and logs `hacking_detected`); with
`stop_on_teacher_hacking` it stops the run. The best evaluation by the golden signal is kept
as a model directory in OUT/best-golden (`best.json` says which step).

Every rank evaluates (same weights, same greedy answers, so the same decision on every rank
without a collective); only the main process writes. The history is in memory: a resumed run
starts a new streak, but keeps OUT/best-golden unless it evaluates better.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from llm_teach.config import check_fields, option
from llm_teach.trainers.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class WatchConfig(TrainConfig):
    """The teacher-hacking watch's fields (distill, gkd and kdrl configs extend this one)."""

    hacking_watch_steps: int = option("Teacher-hacking watch: evaluate every N optimizer steps on "
                                      "hacking_eval_data (0 = off).", 0)
    hacking_eval_data: str | None = option("Teacher-hacking watch: held-out Problem source (never the training "
                                           "data), e.g. rg:chain_sum?seed=99.")
    hacking_eval_limit: int = option("Teacher-hacking watch: held-out problems per evaluation.", 16)
    hacking_max_new_tokens: int = option("Teacher-hacking watch: max new tokens of the student's greedy answers.",
                                         64)
    hacking_patience: int = option("Teacher-hacking watch: warn when the proxy fell while the golden signal got "
                                   "worse for this many consecutive evaluations (K).", 3)
    reference: str | None = option("Teacher-hacking watch: a stronger reference model spec; its divergence to "
                                   "the student joins the golden signal.")
    stop_on_teacher_hacking: bool = option("Teacher-hacking watch: stop the run when it fires (the best model by "
                                           "the golden signal is in OUT/best-golden).", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, hacking_watch_steps=">= 0", hacking_eval_limit=">= 1", hacking_max_new_tokens=">= 1",
                     hacking_patience=">= 1")
        if self.hacking_watch_steps and not self.hacking_eval_data:
            raise ValueError("hacking_watch_steps needs hacking_eval_data (held-out problems)")


# -- the detection rule -------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchPoint:
    """One evaluation: proxy (lower = closer to the teacher), golden accuracy and, with a
    reference model, the divergence to it (lower = better)."""

    proxy: float
    accuracy: float
    reference_kl: float | None = None


def golden_worse(prev: WatchPoint, cur: WatchPoint) -> bool:
    """The golden signal got worse from `prev` to `cur`: accuracy fell, or it did not rise
    while the divergence to the reference grew."""
    if cur.accuracy < prev.accuracy:
        return True
    return (cur.reference_kl is not None and prev.reference_kl is not None
            and cur.accuracy <= prev.accuracy and cur.reference_kl > prev.reference_kl)


def hacking_streak(points: Sequence[WatchPoint]) -> int:
    """How many of the latest consecutive evaluations had the proxy fall while the golden
    signal got worse (each compared with the evaluation before it)."""
    streak = 0
    for prev, cur in zip(reversed(points[:-1]), reversed(points[1:])):
        if not (cur.proxy < prev.proxy and golden_worse(prev, cur)):
            break
        streak += 1
    return streak


def teacher_hacking(points: Sequence[WatchPoint], patience: int) -> bool:
    """The watch's rule: the streak has reached `patience` (K) evaluations."""
    return hacking_streak(points) >= patience


def golden_key(point: WatchPoint) -> tuple[float, float]:
    """Sort key of the golden signal (higher is better): accuracy, then -reference KL."""
    return point.accuracy, -(point.reference_kl if point.reference_kl is not None else 0.0)


# -- evaluation ---------------------------------------------------------------------------------


def mean_token_kl(model, reference, ids, attention, completion_mask) -> float:
    """Mean over completion tokens of KL(reference || model), full vocabulary (the held-out set
    is small: plain logits, no tiling). ids [B, L]; completion_mask [B, L] marks completion tokens."""
    from llm_teach.trainers.losses.divergences import forward_kl

    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    kw = dict(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False)
    student, teacher = model(**kw).logits[:, :-1].float(), reference(**kw).logits[:, :-1].float()
    vocab = min(student.size(-1), teacher.size(-1))  # padded vocabularies: the real tokens are the prefix
    d = forward_kl(student[..., :vocab].log_softmax(-1), teacher[..., :vocab].log_softmax(-1))
    m = completion_mask[:, 1:].to(d.dtype)
    return float((d * m).sum() / m.sum().clamp(min=1.0))


class HeldOut:
    """The held-out problems as left-padded prompt ids, and their grading keys."""

    def __init__(self, cfg: WatchConfig, tokenizer):
        import torch

        from llm_teach.backends.base import encode_prompt
        from llm_teach.data import grading_benchmark, load_problems
        from llm_teach.trainers.records import problem_prompt

        problems = load_problems(cfg.hacking_eval_data, cfg.hacking_eval_limit, split="test")
        encoded = [encode_prompt(tokenizer, problem_prompt(p.question, cfg.template)) for p in problems]
        width = max(map(len, encoded))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        self.attention = torch.zeros_like(self.ids)
        for i, e in enumerate(encoded):
            self.ids[i, width - len(e):] = torch.tensor(e)
            self.attention[i, width - len(e):] = 1
        self.gold = [(p.answer, grading_benchmark(p.source), p.meta) for p in problems]
        self.tokenizer, self.pad = tokenizer, pad


def evaluate(model, teacher, reference, held: HeldOut, max_new_tokens: int) -> WatchPoint:
    """Greedy answers of `model` to the held-out problems, graded, and the proxy / reference
    divergences over those answers' tokens."""
    import torch

    from llm_teach.grading import is_correct

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            ids, attention = held.ids.to(device), held.attention.to(device)
            out = model.generate(input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=held.pad, use_cache=True)
            completion = out[:, ids.size(1):]
            eos = held.tokenizer.eos_token_id
            done = (completion == eos).int().cumsum(-1) if eos is not None else torch.zeros_like(completion)
            keep = ((done == 0) | ((done == 1) & (completion == eos))).long()  # through the first EOS
            texts = held.tokenizer.batch_decode(completion * keep + held.pad * (1 - keep), skip_special_tokens=True)
            accuracy = sum(is_correct(t, a, b, m) for t, (a, b, m) in zip(texts, held.gold)) / len(texts)
            full_attention = torch.cat([attention, keep], 1)
            mask = torch.cat([torch.zeros_like(attention), keep], 1)
            proxy = mean_token_kl(model, teacher, out, full_attention, mask)
            ref = mean_token_kl(model, reference, out, full_attention, mask) if reference is not None else None
    finally:
        model.train(was_training)
    return WatchPoint(proxy, accuracy, ref)


# -- the callback -------------------------------------------------------------------------------


def watch_callbacks(cfg: WatchConfig, out: Path, tokenizer, teacher=None) -> list:
    """[the watch] when `hacking_watch_steps` is set, else []. `teacher`: the trainer's local
    teacher model when it has one (else `cfg.teacher` is loaded here: the proxy needs the
    teacher's full distribution)."""
    if not cfg.hacking_watch_steps:
        return []
    from llm_teach.errors import UserError
    from llm_teach.trainers.model_loading import load_teacher

    spec = getattr(cfg, "teacher", None)
    if teacher is None:
        if not spec:
            raise UserError("the teacher-hacking watch needs the teacher as a model spec (--teacher SPEC)")
        teacher = load_teacher(spec, getattr(cfg, "teacher_dtype", "float32"))
    reference = load_teacher(cfg.reference, "float32") if cfg.reference else None
    return [TeacherHackingWatch(HeldOut(cfg, tokenizer), teacher, reference, every=cfg.hacking_watch_steps,
                                patience=cfg.hacking_patience, stop=cfg.stop_on_teacher_hacking,
                                max_new_tokens=cfg.hacking_max_new_tokens, best_dir=out / "best-golden")]


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class TeacherHackingWatch(_callback_base()):
    """The watch as a `transformers.TrainerCallback` (module docstring). `evaluate_model` is the
    one evaluation; tests may call `on_step_end` with any model to drive it."""

    def __init__(self, held: HeldOut, teacher, reference, *, every: int, patience: int, stop: bool,
                 max_new_tokens: int, best_dir: Path | None):
        self.held, self.teacher, self.reference = held, teacher, reference
        self.every, self.patience, self.stop, self.max_new_tokens = every, patience, stop, max_new_tokens
        self.best_dir = best_dir
        self.history: list[WatchPoint] = []
        self.best: tuple[tuple[float, float], int] | None = None
        saved = best_dir / "best.json" if best_dir is not None else None
        if saved is not None and saved.is_file():  # a resumed run: only a better evaluation replaces it
            kept = json.loads(saved.read_text())
            self.best = (golden_key(WatchPoint(kept["proxy"], kept["accuracy"], kept["reference_kl"])), kept["step"])
        self.fired_at: list[int] = []
        self.pending: dict[str, Any] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.every:
            return control
        point = evaluate(model, self.teacher, self.reference, self.held, self.max_new_tokens)
        self.history.append(point)
        fired = teacher_hacking(self.history, self.patience)
        self.pending = {"hacking_proxy": point.proxy, "hacking_accuracy": point.accuracy,
                        "hacking_streak": hacking_streak(self.history), "hacking_detected": int(fired)}
        if point.reference_kl is not None:
            self.pending["hacking_reference_kl"] = point.reference_kl
        if self.best is None or golden_key(point) > self.best[0]:
            self.best = (golden_key(point), state.global_step)
            if state.is_world_process_zero and self.best_dir is not None:
                self._save_best(model, state.global_step, point)
        if fired:
            self.fired_at.append(state.global_step)
            log.warning("teacher hacking suspected at step %d: the proxy (KL to the teacher) fell while the golden "
                        "signal got worse for %d evaluations%s", state.global_step, self.patience,
                        "; stopping" if self.stop else "")
            if self.stop:
                control.should_training_stop = True
        control.should_log = True  # the evaluation goes into metrics.jsonl at this step
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.pending:
            logs.update(self.pending)
            self.pending = {}

    def _save_best(self, model, step: int, point: WatchPoint) -> None:
        import shutil

        tmp = self.best_dir.with_name(self.best_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        self.held.tokenizer.save_pretrained(tmp)
        (tmp / "best.json").write_text(json.dumps({"step": step, "proxy": point.proxy, "accuracy": point.accuracy,
                                                   "reference_kl": point.reference_kl}) + "\n")
        shutil.rmtree(self.best_dir, ignore_errors=True)
        tmp.rename(self.best_dir)
