"""Student rollouts through vLLM: the GRPO/KDRL options reach TRL's GRPOConfig unchanged, are
validated like every other option, and stay out of TRL's arguments when use_vllm is off.
(Running TRL's colocated vLLM needs vllm importable: tests/integration/test_vllm_rollouts.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import trl

from llm_teach.config import FieldError
from llm_teach.trainers.grpo import VLLM_ROLLOUT_FIELDS, GRPOConfig, grpo_args
from llm_teach.trainers.kdrl import KDRLConfig

BASE = dict(model="tiny-random", data="rg:chain_sum", per_device_train_batch_size=4)
SET = dict(use_vllm=True, vllm_mode="server", vllm_server_base_url="http://127.0.0.1:8123",
           vllm_server_host="10.0.0.7", vllm_server_port=8123, vllm_server_timeout=12.5, vllm_group_port=51999,
           vllm_gpu_memory_utilization=0.45, vllm_tensor_parallel_size=2, vllm_max_model_length=1536,
           vllm_enable_sleep_mode=True)


@pytest.mark.parametrize("cls", [GRPOConfig, KDRLConfig])
def test_every_vllm_option_reaches_trl(cls, tmp_path):
    extra = dict(teacher="tiny-random") if cls is KDRLConfig else {}
    args = grpo_args(cls(**BASE, **extra, **SET), tmp_path)
    assert set(SET) == set(VLLM_ROLLOUT_FIELDS)
    for name, value in SET.items():
        assert getattr(args, name) == value, name


def test_options_are_trl_fields_with_trl_defaults(tmp_path):
    ours = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    theirs = {f.name: f for f in dataclasses.fields(trl.GRPOConfig)}
    for name in VLLM_ROLLOUT_FIELDS:
        assert name in theirs, name  # a TRL rename would fail here, not silently at train time
        assert ours[name].default == theirs[name].default, name
        assert ours[name].metadata["help"], name


def test_without_use_vllm_trl_gets_its_own_defaults(tmp_path):
    args = grpo_args(GRPOConfig(**BASE, vllm_mode="server", vllm_gpu_memory_utilization=0.9), tmp_path)
    assert args.use_vllm is False and args.vllm_gpu_memory_utilization == 0.3


@pytest.mark.parametrize("values, key", [(dict(vllm_mode="remote"), "vllm_mode"),
                                         (dict(vllm_gpu_memory_utilization=1.5), "vllm_gpu_memory_utilization"),
                                         (dict(vllm_server_port=0), "vllm_server_port"),
                                         (dict(vllm_tensor_parallel_size=0), "vllm_tensor_parallel_size")])
def test_bad_vllm_options_are_refused(values, key):
    with pytest.raises((FieldError, ValueError), match=key):
        GRPOConfig(**BASE, **values)
