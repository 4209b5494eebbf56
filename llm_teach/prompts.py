"""Prompt templates: Jinja2 files under `prompts/<stage>/`, rendered in a sandbox.

Templates ship inside the wheel (as `llm_teach/prompts`); in a source checkout they are read
from the repository's top-level `prompts/` folder. The sandbox and StrictUndefined mean a
template can neither reach Python internals nor silently render a missing variable as "".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from llm_teach.data.jsonl import read_text
from llm_teach.errors import UserError
from llm_teach.runs.hashing import text_hash


def prompts_dir() -> Path:
    packaged = Path(__file__).parent / "prompts"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "prompts"


@lru_cache(maxsize=None)
def _env(root: str) -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=FileSystemLoader(root), undefined=StrictUndefined,
                                keep_trailing_newline=False, autoescape=False)


def template_source(name: str, root: str | Path | None = None) -> str:
    path = Path(root or prompts_dir()) / name
    if not path.is_file():
        raise UserError(f"prompt template '{name}' not found under {path.parent}")
    return read_text(path)


def render(name: str, root: str | Path | None = None, **variables) -> str:
    """Render `prompts/<name>` (e.g. "eval/boxed.jinja") with `variables`."""
    try:
        template = _env(str(root or prompts_dir())).get_template(name)
    except TemplateNotFound:
        raise UserError(f"prompt template '{name}' not found under {root or prompts_dir()}") from None
    return template.render(**variables).strip()


def template_hash(name: str, root: str | Path | None = None) -> str:
    """Hash recorded in manifests, so a changed prompt is visible when comparing runs."""
    return text_hash(template_source(name, root))
