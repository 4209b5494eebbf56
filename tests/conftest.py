"""Shared fixtures: one converted SmolLM2 and one tiny random model for the whole session.

The suite is in three folders: `unit/` (no model, no subprocess: seconds), `integration/`
(tiny-random, CLI runs in subprocesses, local servers, several processes) and `slow/` (the
real SmolLM2-135M; every test there is marked `slow`). This file and the helper modules beside
it (`scripted_backend.py`, `sigkill.py`, `stage_cases.py`, `fault_server.py`) serve all three:
pytest puts `tests/` on `sys.path`, so they import as top-level modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CLI = [sys.executable, "-m", "llm_teach"]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


_FOLDER_ORDER = {"slow": 0, "integration": 1, "unit": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: slow/, then integration/, then unit/ (stable within each). Under
    `make test`'s two xdist workers a file is handed out in this order, so the minute-long
    SmolLM2 files start while the other worker has plenty of small ones left, instead of
    ending the run with one worker busy and the other idle."""
    items.sort(key=lambda item: _FOLDER_ORDER.get(Path(str(item.path)).parent.name, 1))


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    from llm_teach.models import prepare

    return prepare("tiny-random")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    from llm_teach.models import prepare

    return prepare("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    from llm_teach.backends.hf import HFBackend, HFConfig

    return HFBackend("tiny-random", HFConfig(dtype="float32", device="cpu"))


@pytest.fixture(scope="session")
def smollm2_backend(smollm2_dir):
    from llm_teach.backends.hf import HFBackend, HFConfig

    return HFBackend("smollm2-135m", HFConfig(dtype="float32", device="cpu"))


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `llm-teach ARGS` in a subprocess, as a user would (exit codes, stderr, no shared state)."""
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def shared_data(*parts: str) -> Path:
    return SHARED_DATA.joinpath(*parts)


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not on this machine")


def check_one_line_error(result, *needles):
    """Exit code 2, no traceback, and exactly one `error:` line on stderr holding every needle."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
