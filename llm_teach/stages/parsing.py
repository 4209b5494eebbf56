"""Reading what a teacher wrote: problems (the stages that synthesize data) and lists of names
(STAT's skill lists, labels and missing-skill judgements). Parsers never evaluate model text."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_SKILL_CHARS = 80  # a "skill" longer than this is a sentence, not a name
MAX_SKILL_WORDS = 12


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


_JSON_LIST = re.compile(r"\[[^\[\]]*\]", re.S)
_BULLET = re.compile(r"^\s*(?:\d{1,3}\s*[.):]|[-*\u2022+])\s+(.+?)\s*$")


def parse_name_list(text: str, loose: bool = False) -> list[str]:
    """Names from model text: the first JSON list of strings (or of {"name"/"skill": ...}), else
    numbered or bulleted lines. `loose` (for picking names from a known list) also accepts
    comma-, semicolon- or line-separated names. Never evaluates the text."""
    for match in _JSON_LIST.finditer(text or ""):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        names = [_list_item(v) for v in value]
        names = [n for n in names if n]
        if names:
            return names
    names = [_clean_name(m.group(1)) for line in (text or "").splitlines() if (m := _BULLET.match(line))]
    names = [n for n in names if n]
    if names or not loose:
        return names
    parts = re.split(r"[,;\n]", text or "")
    return [n for n in (_clean_name(p) for p in parts) if n]


def parse_skill_file(text: str) -> list[str]:
    """A user's skill list: JSON (a list, or {"skills": [...]}) or one skill per line (bullets
    and numbering allowed; blank lines and `#` comments ignored)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        value = value.get("skills")
    if isinstance(value, list):
        return [n for n in (_list_item(v) for v in value) if n]
    names = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _BULLET.match(line)
        name = _clean_name(m.group(1) if m else line)
        if name:
            names.append(name)
    return names


def dedupe_skills(names: list[str]) -> list[str]:
    """Drop repeats that differ only in case, spacing or punctuation (first spelling kept)."""
    seen, out = set(), []
    for name in names:
        key = skill_key(name)
        if key and key not in seen:
            seen.add(key)
            out.append(name)
    return out


def match_skills(names: list[str], skills: list[str], limit: int) -> tuple[list[str], list[str]]:
    """(names found in `skills`, spelled as in the list, deduplicated, at most `limit`;
    names not on the list)."""
    canonical = {skill_key(s): s for s in skills}
    matched, unknown = [], []
    for name in names:
        skill = canonical.get(skill_key(name))
        if skill is None:
            unknown.append(name)
        elif skill not in matched and len(matched) < limit:
            matched.append(skill)
    return matched, unknown


def skill_key(name: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.casefold()).split())


def _list_item(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name", value.get("skill", ""))
    return _clean_name(value) if isinstance(value, str) else ""


def _clean_name(raw: str) -> str:
    """"**Adding fractions**: combining ..." -> "Adding fractions"; too long -> ""."""
    name = re.sub(r"[*`_\"]+", " ", raw).strip()
    name = re.split(r"\s*:\s+|\s+[-\u2013\u2014]\s+", name, maxsplit=1)[0]
    name = " ".join(name.split()).strip(" .,;'")
    if not name or len(name) > MAX_SKILL_CHARS or len(name.split()) > MAX_SKILL_WORDS:
        return ""
    return name
