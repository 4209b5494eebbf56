"""Trainer configs built in Python check their choice fields."""

from __future__ import annotations

import pytest


def test_choice_fields_are_checked_for_configs_built_in_python():
    from llm_teach.trainers.distill import DistillConfig
    from llm_teach.trainers.kdrl import KDRLConfig

    with pytest.raises(ValueError, match="'kd_mask': 'groups' is not one of"):
        KDRLConfig(model="tiny-random", data="rg:chain_sum", teacher="tiny-random", kd_mask="groups")
    with pytest.raises(ValueError, match="'teacher_backend': 'vllm-server' is not one of"):
        DistillConfig(model="tiny-random", data="x.jsonl", teacher_backend="vllm-server")
