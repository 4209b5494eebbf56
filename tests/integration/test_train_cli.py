"""`llm-teach train` input handling: a bad input is one line naming the file/line/key, exit 2,
no traceback and no output directory; YAML configs and --set overrides fill the config."""

from __future__ import annotations

import json

from conftest import run_cli


def check_error(res, *needles: str) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_are_one_line_errors(tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n')
    check_error(run_cli("train", "--method", "dpo", "--model", "tiny-random", "--data", bad, "--out", out),
                str(bad), "line 2", "invalid JSON")
    no_chosen = tmp_path / "nochosen.jsonl"
    no_chosen.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "rejected": "c"}\n')
    check_error(run_cli("train", "--method", "dpo", "--model", "tiny-random", "--data", no_chosen, "--out", out),
                str(no_chosen), "line 2", "'chosen'")
    check_error(run_cli("train", "--method", "ppo", "--model", "tiny-random", "--data", bad, "--out", out),
                "unknown training method 'ppo'")
    check_error(run_cli("train", "--method", "sft", "--model", "tiny-random", "--data", no_chosen, "--out", out,
                        "--set", "learning_rat=1"), "unknown key 'learning_rat'", "learning_rate")
    check_error(run_cli("train", "--method", "sft", "--model", "no-such-model", "--data", "rg:chain_sum",
                        "--out", out), "no-such-model")
    assert not out.exists()


def test_yaml_config_and_overrides(tmp_path):
    """YAML < flags < --set; the resolved config lands in the manifest."""
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "completion": str(i)}) + "\n" for i in range(4)))
    config = tmp_path / "sft.yaml"
    config.write_text(f"data: {data}\nmax_steps: 1\nlearning_rate: 3.0e-4\nlora_r: 4\nlora_targets: [q_proj, v_proj]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 1\n")
    check_error(run_cli("train", "--method", "sft", "--model", "tiny-random", "--config", bad, "--out", tmp_path / "x"),
                str(bad), "unknown key 'max_step'")
    out = tmp_path / "out"
    res = run_cli("train", "--method", "sft", "--model", "tiny-random", "--config", config, "--out", out,
                  "--learning-rate", "2.0e-4", "--set", "lora_alpha=8")
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = json.loads((out / "manifest.json").read_text())["config"]
    assert cfg["learning_rate"] == 2e-4 and cfg["lora_r"] == 4 and cfg["lora_alpha"] == 8
    assert cfg["lora_targets"] == ["q_proj", "v_proj"]
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"] and adapter["r"] == 4
    assert res.stdout.strip().splitlines()[-1] == str(out / "adapter")


def test_show_options_documents_every_key():
    res = run_cli("train", "--method", "kdrl", "--show-options")
    assert res.returncode == 0
    for key in ("kd_estimator", "kd_beta", "kd_mask", "num_generations", "lora_r", "teacher_backend"):
        assert f"{key} = " in res.stdout


def test_finished_run_is_reused_only_for_the_same_data(tmp_path):
    """Same config and data: the finished model is returned as is. Same config, edited data file:
    refused (never a stale model silently passed off as trained on the new data)."""
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}.", "completion": str(i)}) + "\n" for i in range(4)))
    args = ("train", "--method", "sft", "--model", "tiny-random", "--data", data, "--max-steps", "1", "--out", tmp_path / "o")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    stamp = (tmp_path / "o" / "manifest.json").read_text()
    again = run_cli(*args)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == first.stdout.splitlines()[-1] == str(tmp_path / "o" / "model")
    assert (tmp_path / "o" / "manifest.json").read_text() == stamp  # not retrained
    data.write_text(data.read_text() + json.dumps({"prompt": "Say 9.", "completion": "9"}) + "\n")
    check_error(run_cli(*args), "with other data", "sft.jsonl")
