"""The teacher fields that distill, gkd and kdrl configs share word for word.

`teacher` and `teacher_backend` stay in each trainer's config: what they mean differs (an online
teacher for records without stored logits, a grader of sampled completions, a KD term on
rollouts), so each carries its own help text.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_teach.config import option
from llm_teach.trainers.hacking_watch import WatchConfig
from llm_teach.trainers.model_loading import TEACHER_KEY_HELP, TEACHER_URL_HELP


@dataclass
class TeacherConfig(WatchConfig):
    """A teacher reached in-process or through a server (plus the teacher-hacking watch)."""

    teacher_base_url: str | None = option(TEACHER_URL_HELP)
    teacher_api_key_env: str | None = option(TEACHER_KEY_HELP)
    teacher_dtype: str = option("Teacher weights dtype (hf and vllm backends).", "float32")
