"""The one SIGKILL harness: kill a run at chosen moments, re-run it, compare with an uninterrupted run.

A preempted job gets no cleanup, so resuming must give exactly the bytes of a run that was
never stopped. Two ways to choose the moment:

- `killed_run_matches_reference`: SIGKILL a stage run several times at seeded random moments
  (chosen by finished work units plus a random fraction of a unit's time, so kills land
  anywhere: inside model calls, between a unit and its log line, inside a logit-store write), finish it, and compare every output and
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


def units_done(out: Path, step: str | None = None) -> int:
    """Finished work units so far: lines of the work log of `step` (`.part` or final), or of
    every step's log when `step` is None."""
    work = out / "work"
    if step is not None:
        logs = [work / f"{step}.jsonl.part", work / f"{step}.jsonl"]
    else:
        logs = [p for p in work.rglob("*") if p.name.endswith((".jsonl", ".jsonl.part"))] if work.is_dir() else []
    return sum(p.read_bytes().count(b"\n") for p in logs if p.exists())


def kill_at_random_times(command: list[str], out: Path, seconds: float, total_units: int, kills: int,
                         seed: int) -> None:
    """Start `command` `kills` times and SIGKILL each run at a seeded random point of the work
    left: after 0-1 more finished units (never the last), then a random fraction of an average
    unit's time, so kills land inside model calls, between a unit and its log line, etc.
    Progress, not wall time, decides, so a busier or quieter machine cannot move a kill past
    the end of the run."""
    rng = random.Random(seed)
    per_unit = seconds / max(total_units, 1)
    for _ in range(kills):
        proc, _ = _start(command, out)
        target = min(total_units - 1, units_done(out) + rng.randint(0, 1))
        while units_done(out) < target and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5) * per_unit)
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
    total = units_done(reference)
    assert total > kills, f"{total} work units leave no room for {kills} kills; give the run more units"
    kill_at_random_times(command(resumed), resumed, seconds, total, kills=kills, seed=seed)
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
