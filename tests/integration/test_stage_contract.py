"""The stage contract, checked for every stage in `llm_teach.stages.STAGES`.

Every stage promises: a re-run of a finished run is a no-op (no model call, the same bytes); a
run SIGKILLed at random moments and re-run ends with exactly the bytes of an uninterrupted
run; a finished run loads no model (backends are made when a unit first needs one). Each
stage's inputs (problems, scripted models, fast options) are `stage_cases.CASES[stage]`; a
stage without an entry fails here, so a new stage gets these tests by adding one.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import llm_teach.launch
import llm_teach.stages.roles
from conftest import ROOT
from llm_teach.data import load_problems
from llm_teach.stages import STAGES
from sigkill import killed_run_matches_reference
from stage_cases import CASES, StageCase, run_case


def case_of(stage: str, request: pytest.FixtureRequest | None = None) -> StageCase:
    """The stage's entry in CASES (missing: the test fails). The entry may mark the requesting
    test xfail for a known gap of the stage (strict: fixing the stage makes the test say so)."""
    if stage not in CASES:
        pytest.fail(f"stage '{stage}' has no entry in tests/stage_cases.py CASES: add its problems, models and options")
    case = CASES[stage]
    test = request.node.originalname if request is not None else None
    if test in case.gaps:
        request.applymarker(pytest.mark.xfail(reason=case.gaps[test], strict=True))
    return case


@dataclass
class Finished:
    """A finished run of one stage, made once for the module, and what making it did."""

    stage: str
    out: Path
    manifest: dict
    made: list[str]  # the specs `make_backend` was asked for, in order
    files: dict[str, bytes]  # every file but the manifest (rewritten by each run)


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def rerun_recording(stage: str, case: StageCase, out: Path, monkeypatch) -> tuple[dict, list[str], list[str]]:
    """Run `stage` into `out` with every backend made on demand (scripted specs get their
    scripted model, any other spec the real one); return the manifest, the specs made and the
    training runs started."""
    scripted = case.backends(load_problems("rg:chain_sum", limit=case.problems), 0.0)
    real_make, real_train = llm_teach.stages.roles.make_backend, llm_teach.launch.train_model
    made, trained = [], []

    def make_backend(spec, options):
        made.append(spec)
        return scripted[spec] if spec in scripted else real_make(spec, options)

    def train_model(*args, **kwargs):
        trained.append(args[0])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(llm_teach.stages.roles, "make_backend", make_backend)
    monkeypatch.setattr(llm_teach.launch, "train_model", train_model)
    return run_case(stage, case, out, None), made, trained


@pytest.fixture(scope="module", params=sorted(STAGES))
def finished(request, tmp_path_factory) -> Finished:
    stage = request.param
    case = case_of(stage)
    out = tmp_path_factory.mktemp(f"finished-{stage}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        manifest, made, _ = rerun_recording(stage, case, out, monkeypatch)
    return Finished(stage, out, manifest, made, snapshot(out))


def test_a_rerun_is_a_no_op(finished, request):
    """Re-running a finished run calls no model and rewrites the same records."""
    case = case_of(finished.stage, request)
    backends = case.backends(load_problems("rg:chain_sum", limit=case.problems), 0.0)
    again = run_case(finished.stage, case, finished.out, backends)
    assert all(backend.calls == [] for backend in backends.values())
    assert snapshot(finished.out) == finished.files
    for key in ("counts", "usage", "summary", "status"):
        assert again.get(key) == finished.manifest.get(key), key


def test_a_finished_run_loads_no_model(finished, monkeypatch, request):
    """Backends are made when a unit first calls them (`run.backend` holds a factory): the first
    run made each scripted model once, however many units used it; a re-run of the finished run
    (as a resume after the last unit would) makes none and trains nothing."""
    case = case_of(finished.stage, request)
    scripted = set(case.backends([], 0.0))
    assert scripted <= set(finished.made) and len(finished.made) == len(set(finished.made))
    again, made, trained = rerun_recording(finished.stage, case, finished.out, monkeypatch)
    assert made == [] and trained == []
    assert again["counts"] == finished.manifest["counts"] and again["usage"] == finished.manifest["usage"]


SIGKILL_SEEDS = {"stat": 5, "arte": 7, "ssb": 2, "llm2llm": 3}


@pytest.mark.parametrize("stage", sorted(s for s in STAGES if s not in CASES or CASES[s].sigkill))
def test_sigkill_gives_identical_bytes(stage, tmp_path, request):
    """Killed 3 times at random moments and re-run, the stage writes exactly the uninterrupted
    run's outputs and work files (counts and usage too), and leaves no `.part` behind."""
    case = case_of(stage, request)
    script = ROOT / "tests" / "stage_cases.py"
    manifest = killed_run_matches_reference(lambda out: [sys.executable, str(script), stage, str(out)], tmp_path,
                                            case.outputs, seed=SIGKILL_SEEDS.get(stage, 1))
    case.check(tmp_path / "reference", tmp_path / "resumed", manifest)
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["status"] == "complete"
