"""Reading problems out of what a teacher wrote (shared by the stages that synthesize data)."""

from __future__ import annotations

import re


def parse_problem(text: str) -> str | None:
    """A written problem or question: without a leading "Problem:" / "New question:" /
    "Example 3:" label (prompts label their examples so, and models echo it), and cut before
    any solution or answer the teacher added anyway (it would leak the answer into the
    question). None when less than 10 characters are left."""
    text = (text or "").strip()
    text = re.sub(r"^\W*(?:new\s+)?(?:problem|question|example)(?:\s*\d+)?\s*[:.]\**\s*", "", text,
                  flags=re.IGNORECASE)
    cut = re.search(r"^\W*(?:solution|answer|final answer)\b", text, flags=re.IGNORECASE | re.MULTILINE)
    if cut:
        text = text[: cut.start()]
    text = text.strip().strip('"').strip()
    return text if len(text) >= 10 else None
