"""SIGKILL a multi-step stage at random moments, re-run it, and compare with an uninterrupted run.

Shared by the STAT and ARTE tests (their stages have several dependent steps, so kills are timed
against the whole stage rather than counted in units of one step).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT


def _started(out: Path, since: float) -> bool:
    """The run has reached its stage (StageRun writes manifest.json first thing)."""
    path = out / "manifest.json"
    return path.exists() and path.stat().st_mtime > since


def _start(command: list[str], out: Path) -> tuple[subprocess.Popen, float]:
    began = time.time()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _started(out, began) and proc.poll() is None:
        time.sleep(0.01)
    return proc, time.time()


def timed_run(command: list[str], out: Path) -> float:
    """Run to completion; return the seconds of stage work (after imports and start-up)."""
    proc, started = _start(command, out)
    assert proc.wait() == 0
    return time.time() - started


def kill_at_random_times(command: list[str], out: Path, seconds: float, kills: int, seed: int) -> None:
    """Start `command` `kills` times, SIGKILLing each run 10-30% of an uninterrupted run's
    work `seconds` after its stage started, so every kill lands before the work is done, at
    points spread over the whole stage (in model calls, between a unit and its log line, ...)."""
    rng = random.Random(seed)
    for _ in range(kills):
        proc, _ = _start(command, out)
        time.sleep(rng.uniform(0.1, 0.3) * seconds)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def killed_run_matches_reference(script: Path, tmp_path: Path, outputs: tuple[str, ...], seed: int) -> dict:
    """`outputs` are the stage's final files, the one written last at the end. Run `script OUT` once uninterrupted and once killed 3 times then finished; assert the final
    output and work files are byte-identical, counts and token usage equal, no `.part` left.
    Returns the reference manifest (for the caller's checks that every step had work)."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    seconds = timed_run([sys.executable, str(script), str(reference)], reference)
    kill_at_random_times([sys.executable, str(script), str(resumed)], resumed, seconds, kills=3, seed=seed)
    assert (resumed / "work").is_dir() and not (resumed / outputs[-1]).exists()  # killed before the last output
    assert subprocess.run([sys.executable, script, resumed], cwd=ROOT, capture_output=True).returncode == 0
    for name in [*outputs, *(f"work/{p.name}" for p in (reference / "work").iterdir())]:
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    manifest = json.loads((reference / "manifest.json").read_text())
    again = json.loads((resumed / "manifest.json").read_text())
    assert again["counts"] == manifest["counts"] and again["usage"] == manifest["usage"]
    assert not list(resumed.rglob("*.part"))
    return manifest
