"""Distillation: config validation."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("values, message", [
    ({"divergence": "kl"}, "key 'divergence'"),
    ({"teacher_backend": "served"}, "key 'teacher_backend'"),
    ({"teacher": "x", "teacher_backend": "openai"}, "teacher_base_url"),
    ({"temperature": 0}, "'temperature' must be > 0"),
])
def test_distill_config_is_validated(values, message):
    from llm_teach.errors import UserError
    from llm_teach.trainers import make_config

    with pytest.raises(UserError, match=message) as info:
        make_config("distill", {"model": "tiny-random", "data": "records.jsonl", **values})
    assert "\n" not in str(info.value)
