"""Issue 10, section 5: the range of every bounded config field is checked in the config
dataclass itself (`option(bounds=...)` + `check_fields` in `__post_init__`), so a Python caller
building a config directly is refused exactly like YAML, `--set` or a flag; and an error names
the key the way the user typed it."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from llm_teach.backends import BackendOptions, SamplingConfig
from llm_teach.config import FieldError, build, check_fields, load
from llm_teach.data.decontam import DecontamConfig
from llm_teach.errors import UserError
from llm_teach.evaluation import EvalConfig, SuiteEntry
from llm_teach.stages.arte import ARTEConfig
from llm_teach.stages.llm2llm import LLM2LLMConfig
from llm_teach.stages.ssb import SSBConfig
from llm_teach.stages.stat import STATConfig
from llm_teach.trainers.distill import DistillConfig
from llm_teach.trainers.dpo import DPOConfig
from llm_teach.trainers.grpo import GRPOConfig
from llm_teach.trainers.kdrl import KDRLConfig
from llm_teach.trainers.sft import SFTConfig

TRAIN = {"model": "tiny-random", "data": "r.jsonl"}

# (config class, required values, field, a value just outside the range, the edge value that is allowed)
EDGES = [
    (SamplingConfig, {}, "temperature", -0.01, 0.0),
    (SamplingConfig, {}, "top_p", 0.0, 1.0),
    (SamplingConfig, {}, "top_p", 1.01, 0.01),
    (SamplingConfig, {}, "max_new_tokens", 0, 1),
    (EvalConfig, {"benchmark": "gsm8k"}, "samples", 0, 1),
    (EvalConfig, {"benchmark": "gsm8k"}, "temperature", -1.0, 0.0),
    (EvalConfig, {"benchmark": "gsm8k"}, "top_p", 5.0, 1.0),
    (EvalConfig, {"benchmark": "gsm8k"}, "max_new_tokens", -5, 1),
    (EvalConfig, {"benchmark": "gsm8k"}, "chunk_size", 0, 1),
    (SuiteEntry, {"benchmark": "gsm8k"}, "limit", 0, 1),
    (SuiteEntry, {"benchmark": "gsm8k"}, "temperature", -0.5, 0.0),
    (SSBConfig, {}, "rollouts", 1, 2),
    (SSBConfig, {}, "rollout_temperature", -0.5, 0.0),
    (SSBConfig, {}, "top_p", 5.0, 1.0),
    (SSBConfig, {}, "chunk_size", 0, 1),
    (SSBConfig, {}, "explain_max_new_tokens", 0, 1),
    (STATConfig, {}, "student_temperature", -0.1, 0.0),
    (STATConfig, {}, "near_duplicate_rouge_l", 1.5, 1.0),
    (STATConfig, {}, "sel_size", -1, 0),
    (STATConfig, {}, "list_max_new_tokens", 0, 1),
    (ARTEConfig, {}, "question_temperature", -1.0, 0.0),
    (ARTEConfig, {}, "final_prompts", 0, 1),
    (LLM2LLMConfig, {}, "rounds", 0, 1),
    (LLM2LLMConfig, {}, "teacher_temperature", -1.0, 0.0),
    (DecontamConfig, {}, "ngram", 0, 1),
    (SFTConfig, TRAIN, "learning_rate", 0.0, 1e-9),
    (SFTConfig, TRAIN, "limit", 0, 1),
    (SFTConfig, TRAIN, "seed", -1, 0),
    (SFTConfig, TRAIN, "lora_dropout", 1.0, 0.0),
    (SFTConfig, TRAIN, "per_device_train_batch_size", 0, 1),
    (SFTConfig, TRAIN, "max_length", 0, 1),
    (DPOConfig, TRAIN, "beta", 0.0, 0.01),
    (DPOConfig, TRAIN, "label_smoothing", 0.6, 0.5),
    (DPOConfig, TRAIN, "learning_rate", -1e-6, 1e-6),  # overridden field keeps TrainConfig's range
    (GRPOConfig, TRAIN, "num_generations", 1, 2),
    (GRPOConfig, TRAIN, "temperature", 0.0, 0.01),
    (KDRLConfig, {**TRAIN, "teacher": "tiny-random"}, "kd_beta", -1e-3, 0.0),
    (DistillConfig, TRAIN, "jsd_beta", 1.5, 1.0),
    (DistillConfig, TRAIN, "teacher_top_k", -1, 0),
]


@pytest.mark.parametrize("cls, required, key, bad, edge", EDGES,
                         ids=[f"{c.__name__}.{k}={b}" for c, _, k, b, _ in EDGES])
def test_a_python_caller_gets_the_range_checked(cls, required, key, bad, edge):
    with pytest.raises(FieldError) as info:
        cls(**required, **{key: bad})
    assert info.value.key == key and f"'{key}' must be" in str(info.value) and repr(bad) in str(info.value)
    assert getattr(cls(**required, **{key: edge}), key) == edge  # the edge itself is allowed


def test_every_sampling_knob_of_every_config_is_bounded():
    """A temperature, top_p, token budget, chunk size, ... field that takes -1 without a word is
    a bug: every such field of every config refuses it, naming itself."""
    classes = {SamplingConfig: {}, EvalConfig: {"benchmark": "gsm8k"}, SuiteEntry: {"benchmark": "gsm8k"},
               SSBConfig: {}, STATConfig: {}, ARTEConfig: {}, LLM2LLMConfig: {}, DecontamConfig: {},
               SFTConfig: TRAIN, DPOConfig: TRAIN, GRPOConfig: TRAIN, KDRLConfig: {**TRAIN, "teacher": "t"},
               DistillConfig: TRAIN}
    words = ("temperature", "top_p", "max_new_tokens", "chunk_size", "samples", "learning_rate", "max_length",
             "batch_size", "limit", "rollouts", "top_k", "steps", "epochs", "ngram", "beta", "lambda", "rouge")
    accepted = []
    for cls, required in classes.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = {int, float} & set(typing.get_args(hints[f.name]) or [hints[f.name]])
            if not numeric or not any(w in f.name for w in words) or f.name == "max_steps":  # -1 = use epochs
                continue
            try:
                cls(**required, **{f.name: -1})
                accepted.append(f"{cls.__name__}.{f.name}")
            except FieldError as exc:
                assert exc.key == f.name
    assert accepted == []


def test_optional_fields_left_unset_pass_and_wrong_types_are_refused():
    assert SuiteEntry(benchmark="gsm8k").limit is None
    assert SFTConfig(**TRAIN, save_total_limit=None).save_total_limit is None
    for bad in ("hot", True, float("nan")):
        with pytest.raises(FieldError, match="'temperature' must be a number"):
            SamplingConfig(temperature=bad)


def test_bounds_forms():
    @dataclasses.dataclass
    class C:
        a: float = 0.5
        b: float = 1.0
        c: int = 0

        def __post_init__(self):
            check_fields(self, a="[0, 1)", b="> 0", c="<= 3")

    C(a=0.0, b=1e-12, c=-10)
    for kwargs, text in (({"a": 1.0}, "'a' must be in [0, 1) (got 1.0)"), ({"b": 0.0}, "'b' must be > 0 (got 0.0)"),
                         ({"c": 4}, "'c' must be <= 3 (got 4)")):
        with pytest.raises(FieldError) as info:
            C(**kwargs)
        assert str(info.value) == text

    @dataclasses.dataclass
    class Typo:
        a: float = 0.5

        def __post_init__(self):
            check_fields(self, a="between 0 and 1")

    with pytest.raises(ValueError, match="bad bounds"):
        Typo()


def test_errors_name_the_key_as_typed(tmp_path):
    """A flag is named as a flag, a --set or YAML key as the key, with where it came from."""
    with pytest.raises(UserError) as info:
        load(SFTConfig, flags={**TRAIN, "learning_rate": -1.0})
    assert str(info.value) == "--learning-rate must be > 0 (got -1.0)"
    with pytest.raises(UserError) as info:  # --set wins over the flag, and is what is named
        load(SFTConfig, overrides=["learning_rate=-2"], flags={**TRAIN, "learning_rate": 1e-5})
    assert str(info.value) == "--set: 'learning_rate' must be > 0 (got -2.0)"
    config = tmp_path / "c.yaml"
    config.write_text("model: tiny-random\ndata: r.jsonl\nmax_steps: -3\n")
    with pytest.raises(UserError) as info:
        load(SFTConfig, config)
    assert str(info.value) == f"{config}: 'max_steps' must be a positive number of steps, or -1 for epochs (got -3)"
    with pytest.raises(UserError, match=r"^step 'x': config: 'top_p' must be in \(0, 1\] \(got 5\.0\)$"):
        build(SSBConfig, {"top_p": 5}, "step 'x': config")
    with pytest.raises(UserError) as info:  # a flag with its own spelling; the nested key is named in it
        load(STATConfig, flags={"decontamination": {"ngram": 0}}, spelled={"decontamination": "--decontaminate"})
    assert str(info.value) == "--decontaminate: 'ngram' must be at least 1 (got 0)"
    # check_choices runs too (a Literal field set from Python)
    with pytest.raises(ValueError, match="'rollouts_from'"):
        SSBConfig(rollouts_from="nobody")


@pytest.mark.parametrize("flags, message", [
    ({"max_concurrency": 0}, "--teacher-max-concurrency must be at least 1 (got 0)"),
    ({"timeout": -1.0}, "--teacher-timeout must be > 0 (got -1.0)"),
    ({"batch_size": 0}, "--teacher-batch-size must be at least 1 (got 0)"),
    ({"max_retries": -1}, "--teacher-max-retries must be at least 0 (got -1)"),
])
def test_backend_flags_out_of_range_name_the_flag(flags, message):
    """0 requests in flight would hang an evaluation; each backend flag is range-checked and the
    refusal names the flag as typed (here a teacher role's)."""
    from llm_teach.cli.options import backend_options

    values = dict(backend="hf", base_url=None, api_key_env=None, max_concurrency=8, dtype="auto", batch_size=16,
                  tensor_parallel_size=1)
    with pytest.raises(UserError) as info:
        backend_options(**{**values, **flags}, prefix="--teacher-")
    assert str(info.value) == message
    with pytest.raises(UserError, match=r"^step 'x': backend: 'max_concurrency' must be at least 1"):
        build(BackendOptions, {"max_concurrency": 0}, "step 'x': backend")
