"""KDRL as the paper runs it, checked through a real trainer step against a reference the test
computes itself: total loss - GRPO loss == beta_t * sum(w * k(R) * m) / N for a teacher
DIFFERENT from the student, for each estimator, at T != 1, with gradient accumulation, off
policy (num_iterations 2: the importance ratio), and with one generation feeding two optimizer
steps (steps_per_generation 2). Also: the paper's defaults, NaN rewards kept in
KD and counted, and truncated sampling refused (tensor-level pieces: test_kdrl_loss_units.py).

The reference never calls the code under test: student and teacher log-probs come from plain
forwards of the two models at temperature T, the estimators are written out here, and N is the
number of completion tokens of the whole generation batch as the test counts them."""

from __future__ import annotations

import json

import pytest
import torch
import trl

TEACHER = "tiny-random?seed=1"
PROBLEMS = [{"id": f"p{i}", "question": f"What is {i}+7-{i}?", "answer": "7"} for i in range(8)]
ESTIMATORS = {"k1": lambda r: -r, "k2": lambda r: 0.5 * r * r, "k3": lambda r: torch.exp(r) - r - 1}


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("recipe") / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return str(path)


def token_logps(model, inputs, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) of the completion tokens, from one plain forward."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    width = inputs["completion_ids"].size(1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, -width - 1:-1].float() / temperature
    return logits.log_softmax(-1).gather(-1, inputs["completion_ids"][..., None]).squeeze(-1)


def probed_run(tmp_path, problems, **cfg):
    """Train a KDRL trainer built by `build_trainer` (the config path users take) and record, per
    micro-batch, (total loss, GRPO loss on the same inputs, reference pieces)."""
    from llm_teach.trainers.kdrl import KDRLConfig, build_trainer
    from llm_teach.trainers.model_loading import load_teacher

    settings = dict(model="tiny-random", teacher=TEACHER, data=problems, max_completion_length=8,
                    num_generations=4, per_device_train_batch_size=4, max_steps=1, kd_mask="none",
                    kd_beta_schedule="constant", kd_beta=0.1, learning_rate=1e-2) | cfg
    config = KDRLConfig(**settings)
    trainer = build_trainer(config, tmp_path / "out")
    teacher = load_teacher(TEACHER, "float32")
    records = []
    compute = trainer._compute_loss

    def probe(model, inputs):
        total = compute(model, inputs)
        with torch.no_grad():
            grpo = trl.GRPOTrainer._compute_loss(trainer, model, inputs)
            student = token_logps(model, inputs, config.temperature)
            records.append(dict(total=total.item(), grpo=grpo.item(), step=trainer.state.global_step,
                                student=student, teacher=token_logps(teacher, inputs, config.temperature),
                                old=inputs.get("old_per_token_logps"), mask=inputs["completion_mask"].float()))
        return total

    trainer._compute_loss = probe  # observe every micro-batch; the computation is the trainer's own
    trainer.train()
    return config, records


def reference_kd(config, records, eps: float = 0.2) -> float:
    """beta * sum over the micro-batches of (w * k(R) * mask), over the completion tokens of
    the generation batch those micro-batches split."""
    k = ESTIMATORS[config.kd_estimator]
    total, tokens = 0.0, 0.0
    for r in records:
        w = torch.ones_like(r["student"]) if r["old"] is None else \
            torch.exp(r["student"] - r["old"]).clamp(1 - eps, 1 + eps)
        total += (w * k(r["teacher"] - r["student"]) * r["mask"]).sum().item()
        tokens += r["mask"].sum().item()
    return config.kd_beta * total / tokens


@pytest.mark.parametrize("estimator, temperature, accumulation", [
    ("k1", 0.7, 1),
    ("k2", 1.5, 2),
    ("k3", 1.0, 2),
])
def test_total_minus_grpo_is_beta_times_kd(tmp_path, problems, estimator, temperature, accumulation):
    config, records = probed_run(tmp_path, problems, kd_estimator=estimator, temperature=temperature,
                                 gradient_accumulation_steps=accumulation)
    assert len(records) == accumulation  # one generation batch, split into the accumulation window
    kd = sum(r["total"] - r["grpo"] for r in records)
    expected = reference_kd(config, records)
    assert abs(expected) > 1e-4  # a different teacher: the term is not trivially zero
    assert kd == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_one_generation_over_two_optimizer_steps_is_normalized_per_window(tmp_path, problems):
    """steps_per_generation 2, no accumulation: one generation batch feeds two optimizer steps (the
    second off policy). Like TRL's dapo GRPO loss, each step's KD divides by its window's share of
    the generation batch's tokens (tokens * GA / steps_per_generation), not by all of them."""
    config, records = probed_run(tmp_path, problems, kd_estimator="k2", steps_per_generation=2, max_steps=2,
                                 per_device_train_batch_size=4)
    assert [r["step"] for r in records] == [0, 1]  # one micro-batch per optimizer step
    assert records[0]["old"] is not None  # TRL keeps pi_old: the second step is off policy
    kd = sum(r["total"] - r["grpo"] for r in records)
    expected = reference_kd(config, records) * 2  # each window holds 1/2 of the generation batch
    assert abs(expected) > 1e-4
    assert kd == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_off_policy_iterations_are_importance_weighted(tmp_path, problems):
    """num_iterations 2: the second pass over the same rollouts is off policy; its KD term carries
    the clipped ratio pi_theta / pi_old (the first pass has none: on policy)."""
    config, records = probed_run(tmp_path, problems, kd_estimator="k2", num_iterations=2, max_steps=2,
                                 per_device_train_batch_size=4)
    first = [r for r in records if r["step"] == 0]
    second = [r for r in records if r["step"] == 1]
    assert first and second and all(r["old"] is not None for r in records)
    ratio = torch.cat([torch.exp(r["student"] - r["old"])[r["mask"].bool()] for r in second])
    assert (ratio - 1).abs().max() > 1e-3  # the policy moved: the ratio matters
    for part in (first, second):
        kd = sum(r["total"] - r["grpo"] for r in part)
        assert kd == pytest.approx(reference_kd(config, part), rel=1e-4, abs=1e-7)
    unweighted = reference_kd(config, [dict(r, old=None) for r in second])
    assert unweighted != pytest.approx(reference_kd(config, second), rel=1e-6)


def unknown_first(completions, **_):
    """Correctness that cannot grade half the responses (TRL turns None into NaN)."""
    return [None if i % 2 else 1.0 for i in range(len(completions))]


def test_trainer_reports_unknown_rewards_and_keeps_their_kd(tmp_path, problems):
    from integration.test_kdrl import make_trainer

    from llm_teach.trainers.model_loading import load_teacher

    trainer = make_trainer(tmp_path / "run", problems, load_teacher(TEACHER, "float32"), reward_funcs=[unknown_first])
    assert trainer.kd_mask == "response"  # the default
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "kd_loss" in h]
    assert log["kd_reward_unknown"] == 2.0  # 2 of the 4 responses ungraded
    assert log["kd_masked_frac"] == pytest.approx(0.5)  # only the 2 correct ones leave KD
    assert log["kd_loss"] > 0


def test_defaults_are_the_papers_recipe():
    from llm_teach.trainers import make_config

    cfg = make_config("kdrl", {"model": "tiny-random", "data": "rg:chain_sum", "teacher": "tiny-random"})
    assert (cfg.kd_estimator, cfg.kd_beta_schedule, cfg.kd_mask) == ("k2", "linear", "response")
    assert (cfg.kd_beta, cfg.kd_beta_min) == (5e-3, 1e-3)


def test_truncated_sampling_is_refused():
    from llm_teach.errors import UserError
    from llm_teach.trainers import make_config

    with pytest.raises(UserError, match="top_p"):
        make_config("kdrl", {"model": "tiny-random", "data": "rg:chain_sum", "teacher": "tiny-random", "top_p": 0.9})
