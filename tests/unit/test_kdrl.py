"""KDRL: config validation."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("values, message", [
    ({}, "needs a teacher"),
    ({"teacher": "tiny-random", "kd_estimator": "k4"}, "kd_estimator"),
    ({"teacher": "tiny-random", "kd_mask": "wrong"}, "kd_mask"),
    ({"teacher": "x", "teacher_backend": "openai"}, "teacher_base_url"),
])
def test_kdrl_config_is_validated(values, message):
    from llm_teach.errors import UserError
    from llm_teach.trainers import make_config

    with pytest.raises(UserError, match=message):
        make_config("kdrl", {"model": "tiny-random", "data": "rg:chain_sum", **values})
