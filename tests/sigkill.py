"""The one SIGKILL harness: kill a run at chosen moments, re-run it, compare with an uninterrupted run.

A preempted job gets no cleanup, so resuming must give exactly the bytes of a run that was
never stopped. Two ways to choose the moment:

- `killed_run_matches_reference`: SIGKILL a stage run several times at seeded random moments
  (timed against an uninterrupted run, so kills land anywhere: inside model calls, between a
  unit and its log line, inside a logit-store write), finish it, and compare every output and
  work file byte for byte. The stage contract (tests/integration/test_stage_contract.py) uses
  it for every stage, and the SSB CLI test for a real tiny model.
- `kill_when`: SIGKILL once when the caller's condition holds (evaluation after N finished
  items, ARTE while the teacher is being trained).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from conftest import ROOT

Command = Callable[[Path], list[str]]  # the run's command line for an output directory


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


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


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
        _kill(proc)


def kill_when(command: list[str], ready: Callable[[], bool], after: float = 0.0, timeout: float = 300) -> None:
    """Start `command`, wait until `ready()` (or the run ends, or `timeout`), wait `after`
    seconds more, and SIGKILL it; it must still be running."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    _kill(proc)


def same_bytes(resumed: Path, reference: Path, name: str) -> bool:
    """`name` holds the same bytes in both runs, once each run's own directory is named alike
    (records may point into their run, e.g. a logit-store ref)."""
    ours = (resumed / name).read_bytes().replace(str(resumed).encode(), str(reference).encode())
    return ours == (reference / name).read_bytes()


def killed_run_matches_reference(command: Command, tmp_path: Path, outputs: tuple[str, ...], seed: int,
                                 kills: int = 3) -> dict:
    """`outputs` are the stage's final files. Run `command`
    once uninterrupted and once killed `kills` times then finished; assert the final output and
    work files are byte-identical, counts and token usage equal, no `.part` left.
    Returns the reference manifest (for the caller's checks that every step had work)."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    seconds = timed_run(command(reference), reference)
    kill_at_random_times(command(resumed), resumed, seconds, kills=kills, seed=seed)
    assert json.loads((resumed / "manifest.json").read_text())["status"] != "complete"  # killed before the end
    finished = subprocess.run(command(resumed), cwd=ROOT, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    work = [str(p.relative_to(reference)) for p in sorted((reference / "work").rglob("*")) if p.is_file()]
    for name in [*outputs, *work]:
        assert same_bytes(resumed, reference, name), name
    manifest = json.loads((reference / "manifest.json").read_text())
    again = json.loads((resumed / "manifest.json").read_text())
    assert again["counts"] == manifest["counts"] and again["usage"] == manifest["usage"]
    assert not list(resumed.rglob("*.part"))
    return manifest
