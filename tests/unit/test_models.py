"""Model specs: parsing, errors, pruned layer choice (loading models: tests/integration, tests/slow)."""

from __future__ import annotations

import pytest

from llm_teach.errors import UserError
from llm_teach.models import parse_spec, pruned_layer_indices


@pytest.mark.parametrize("spec, kind", [
    ("smollm2-135m", "alias"),
    ("tiny-random", "alias"),
    ("tiny-random?seed=3", "alias"),
    ("smollm2-135m?layers=20", "alias"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub"),
])
def test_parse_spec_kinds(spec, kind):
    assert parse_spec(spec).kind == kind


@pytest.mark.parametrize("spec, message", [
    ("no-such-model", "unknown model spec"),
    ("smollm2-135m?layers=0", "whole number"),
    ("smollm2-135m?layers=x", "whole number"),
    ("smollm2-135m?depth=3", "unknown option"),
    ("smollm2-135m?seed=1", "only applies to tiny-random"),
    ("missing.gguf", "GGUF file not found"),
])
def test_bad_specs_are_one_clear_error(spec, message):
    with pytest.raises(UserError, match=message):
        parse_spec(spec)


def test_local_dir_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        parse_spec(str(tmp_path))


@pytest.mark.parametrize("total, keep, expected", [
    (30, 1, [0]),
    (30, 2, [0, 29]),
    (30, 4, [0, 10, 19, 29]),
    (5, 5, [0, 1, 2, 3, 4]),
])
def test_pruned_layer_indices_spread_evenly(total, keep, expected):
    assert pruned_layer_indices(total, keep) == expected
