"""The openai backend: URL and API-key handling, credential masking (no server)."""

from __future__ import annotations

import pytest

from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig
from llm_teach.errors import UserError


def test_score_needs_a_tokenizer_spec():
    backend = OpenAIBackend("gpt-nonexistent", OpenAIConfig(base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(UserError, match="--tokenizer"):
        backend.score(["a"], ["b"])


def test_base_url_and_api_key_env(monkeypatch):
    assert OpenAIBackend("m", OpenAIConfig(base_url="http://h:1")).base_url == "http://h:1/v1"
    assert OpenAIBackend("m", OpenAIConfig(base_url="http://h:1/v1/")).base_url == "http://h:1/v1"
    masked = OpenAIBackend("m", OpenAIConfig(base_url="https://u:hunter2@h:1/v1"))
    assert "hunter2" not in masked.base_url + repr(masked) + str(masked.stats)
    with pytest.raises(UserError, match="not an http"):
        OpenAIBackend("m", OpenAIConfig(base_url="h:1"))
    monkeypatch.delenv("LLM_TEACH_TEST_UNSET", raising=False)
    with pytest.raises(UserError, match="LLM_TEACH_TEST_UNSET"):
        OpenAIBackend("m", OpenAIConfig(base_url="http://h:1", api_key_env="LLM_TEACH_TEST_UNSET"))


@pytest.mark.parametrize("url, shown", [
    ("http://user:secret@[::1]:8000/v1", "http://user:***@[::1]:8000/v1"),
    ("https://user:secret@Teacher.example/v1", "https://user:***@Teacher.example/v1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
])
def test_credentials_in_the_url_are_masked_wherever_it_is_shown(url, shown):
    from llm_teach.backends.http import without_password

    assert without_password(url) == shown
