"""Stage fidelity (issue 12): the rules the stages take from their papers and reference code,
pinned with scripted backends (no model). One section per rule; each says where it comes from."""

from __future__ import annotations

import json

import pytest

from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig, Decontaminator
from llm_teach.errors import UserError
from llm_teach.evaluation import majority_correct
from llm_teach.grading.voting import answer_groups, majority_vote
from llm_teach.stages.stat_syn import agreeing_solutions


# -- answer equivalence wherever answers are grouped --------------------------------------------

@pytest.mark.parametrize("benchmark, answers, groups", [
    ("math", ["\\sqrt2", "\\sqrt{2}", "2"], [0, 0, 2]),  # not one key: math-verify joins them
    ("math", ["0.5", "\\frac12", "\\dfrac{1}{2}", "1/2", "2"], [0, 0, 0, 0, 4]),
    ("math", ["(x+1)^2", "x^2+2x+1", "x^2+1"], [0, 0, 2]),
    ("math", ["[0,1)", "[0,1]"], [0, 1]),  # equivalence is not leniency
    ("gsm8k", ["1,000", "$1000", "1000.0", "18 dollars", "18"], [0, 0, 0, 3, 3]),
    ("rg:chain_sum", ["-4", "-4.0", "4", None], [0, 0, 2, None]),
])
def test_equivalent_spellings_group_together(benchmark, answers, groups):
    assert answer_groups(answers, benchmark) == groups


def test_votes_count_equivalent_spellings_as_one_answer():
    # text equality would see four answers of one vote each and let the first ("3") win
    assert majority_vote(["3", "\\sqrt2", "\\sqrt{2}", "\\sqrt{ 2 }"], "math") == (1, 3)
    # maj@k: the right answer, spelled three ways, outvotes a wrong one given twice
    item = {"answers": ["7", "0.5", "\\frac12", "7", "\\tfrac{1}{2}"], "correct": [False, True, True, False, True]}
    assert majority_correct(item, "math500") is True
    # STAT-Syn's 2-of-3 agreement keeps both solutions that spell the answer differently
    answer, kept = agreeing_solutions(["so \\boxed{\\sqrt2}", "\\boxed{3}", "hence \\boxed{\\sqrt{2}}"], "math", 2)
    assert answer == "\\sqrt2" and kept == ["so \\boxed{\\sqrt2}", "hence \\boxed{\\sqrt{2}}"]


# -- decontamination is not optional by accident -----------------------------------------------

def _offline(monkeypatch, tmp_path):
    """A machine without local benchmark copies and without the Hub."""
    import llm_teach.data.decontam as decontam
    import llm_teach.data.problems as problems

    def no_hub(name, split, limit):
        raise UserError(f"cannot load '{name}' from the Hugging Face Hub (ConnectionError)")

    monkeypatch.setattr(decontam, "shared_data_dir", lambda: tmp_path / "no-shared-data")
    monkeypatch.setattr(problems, "load_hub", no_hub)


def test_an_unloadable_decontamination_set_stops_the_run(monkeypatch, tmp_path):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.stat import STATConfig, stat
    from scripted_backend import ScriptedBackend

    _offline(monkeypatch, tmp_path)
    with pytest.raises(UserError, match=r"gsm8k.*--no-decontaminate"):
        Decontaminator.from_config(DecontamConfig())
    model = ScriptedBackend(lambda text, i, seed: "\\boxed{1}")
    problems = load_problems("rg:chain_sum", limit=4)
    with pytest.raises(UserError, match=r"gsm8k.*--no-decontaminate"):
        stat(problems, Models.of(model, model), STATConfig(mode="syn", chunk_size=4), tmp_path / "out")
    assert not model.calls and not (tmp_path / "out" / "sft.jsonl").exists()  # stopped before any work

    index, report = Decontaminator.from_config(DecontamConfig(enabled=False))
    assert index.match("anything at all, however long it is") is None and "no-decontaminate" in report["disabled"]


def test_proceeding_without_decontamination_is_recorded_in_the_manifest(monkeypatch, tmp_path):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.stat import STATConfig, stat
    from scripted_backend import ScriptedBackend

    _offline(monkeypatch, tmp_path)
    model = ScriptedBackend(lambda text, i, seed: "\\boxed{1}")
    problems = load_problems("rg:chain_sum", limit=4)
    manifest = stat(problems, Models.of(model, model),
                    STATConfig(mode="syn", chunk_size=4, decontamination=DecontamConfig(enabled=False)), tmp_path / "o")
    assert "no-decontaminate" in manifest["decontamination"]["disabled"]
    assert manifest["config"]["decontamination"]["enabled"] is False
