"""Tests aimed at bugs an audit planted in KDRL that the earlier suite missed. The loss-level
ones (sign of the KD term, estimator option, gradient-accumulation scaling, teacher
temperature) are killed by tests/test_kdrl_recipe.py's composition tests; this file holds the
multi-rank one: every rank must apply the KD mask of ITS OWN responses, with a reward that
depends on each completion's content (a constant reward hides a wrong slice)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from fault_server import free_port

ACCELERATE = str(Path(sys.executable).parent / "accelerate")


@pytest.mark.slow
def test_each_rank_masks_its_own_responses(tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"p{i}", "question": f"Say {i}.", "answer": str(i)}) + "\n"
                                for i in range(4)))
    out = tmp_path / "out"
    res = subprocess.run([ACCELERATE, "launch", "--config_file", "configs/accelerate/cpu-2proc.yaml",
                          "--main_process_port", str(free_port()), "tests/kdrl_rank_probe.py", str(out), str(problems)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # two generations on each rank
    for rows in ranks:
        for row in rows:
            # response masking: KD exactly on this rank's responses that are not correct
            assert row["kd_mask"] == [float(r <= 0) for r in row["rewards"]]
    # the check has teeth: the two ranks' masks differ somewhere
    assert any(a["kd_mask"] != b["kd_mask"] for a, b in zip(*ranks))
