"""Distillation trainer: positions line up with the completion tokens, a one-hot teacher gives
exactly the completion cross-entropy, top-k equals full-vocabulary when k covers the support,
teacher == student gives ~0, and SSB-style records train end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli

PROMPTS = [[{"role": "user", "content": f"What is {i}+{i}?" + " Think." * i}] for i in range(6)]
HINTED = [[{"role": "user", "content": f"Hint: double it. What is {i}+{i}?"}] for i in range(6)]
COMPLETIONS = [f"{i}+{i}={2 * i}. The answer is \\boxed{{{2 * i}}}." + " Done." * (i % 3) for i in range(6)]


def write_records(root: Path, rows: list[tuple], k: int = 8, tails: list | None = None) -> Path:
    """Distill records + a top-k store, the way the SSB stage writes them.
    `rows`: (prompt, teacher_prompt, completion, token_ids, topk_ids, topk_logprobs);
    `tails`: per row, {T: log tail mass per token} (a store with tail temperatures 1 and 2)."""
    from llm_teach.data.logit_store import TopKLogitWriter

    root.mkdir(parents=True, exist_ok=True)
    temps = [1.0, 2.0] if tails else []
    with TopKLogitWriter(root / "logits", k=k, model="test-teacher", tail_temperatures=temps) as w, \
            open(root / "records.jsonl", "w") as f:
        for i, (p, tp, c, tokens, ids, logps) in enumerate(rows):
            tail = list(zip(*(tails[i][t] for t in temps))) if tails else None
            ref = w.append(str(i), tokens, ids, logps, [0.0] * len(tokens), tail)
            f.write(json.dumps({"id": str(i), "prompt": p, "teacher_prompt": tp, "completion": c,
                                "logits_ref": ref}) + "\n")
    return root / "records.jsonl"


@pytest.fixture(scope="module")
def scored_records(tmp_path_factory) -> Path:
    """Records scored by a real teacher (tiny-random seed 1) on hinted prompts, top-8."""
    from llm_teach.backends.base import TailRequest
    from llm_teach.backends.hf import HFBackend, HFConfig

    teacher = HFBackend("tiny-random?seed=1", HFConfig(dtype="float32", device="cpu"))
    rows = []
    scored = teacher.score(HINTED, COMPLETIONS, top_k=8, tail=TailRequest((1.0, 2.0)))
    for p, tp, c, s in zip(PROMPTS, HINTED, COMPLETIONS, scored):
        ids = [sorted(r, key=lambda t: -r[t]) for r in s.top_k]
        rows.append((p, tp, c, s.token_ids, ids, [[r[t] for t in row] for r, row in zip(s.top_k, ids)]))
    return write_records(tmp_path_factory.mktemp("ssb"), rows, tails=[s.log_tail for s in scored])


@pytest.fixture(scope="module")
def one_hot_records(tmp_path_factory) -> Path:
    """A teacher certain of every completion token (top-1 log-prob 0, the rest ~-inf)."""
    from llm_teach.models import load_tokenizer

    tok = load_tokenizer("tiny-random")
    rows = []
    for p, c in zip(PROMPTS, COMPLETIONS):
        tokens = tok(c, add_special_tokens=False)["input_ids"]
        ids = [[t, 1, 2, 3] for t in tokens]
        rows.append((p, p, c, tokens, ids, [[0.0, -1e4, -1e4, -1e4]] * len(tokens)))
    return write_records(tmp_path_factory.mktemp("onehot"), rows, k=4)


def trainer_for(records: Path, tmp: Path, **extra):
    from llm_teach.trainers.distill import DistillConfig, build_trainer

    return build_trainer(DistillConfig(model="tiny-random", data=str(records), max_steps=1, **extra), tmp)


def test_positions_line_up_with_completion_tokens(scored_records, tmp_path):
    from llm_teach.data.logit_store import TopKLogitStore

    trainer = trainer_for(scored_records, tmp_path)
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    records = [json.loads(line) for line in scored_records.read_text().splitlines()]
    store = TopKLogitStore(records[0]["logits_ref"]["store"])
    for i, (row, rec) in enumerate(zip(rows, records)):
        stored = store.get(rec["logits_ref"])
        n = len(stored.token_ids)
        assert batch["completion_mask"][i].sum() == n
        # target j is completion token j, and the hidden state used for it sits one position before it
        assert batch["targets"][i, :n].tolist() == stored.token_ids.tolist()
        assert batch["input_ids"][i, batch["positions"][i, :n] + 1].tolist() == stored.token_ids.tolist()
        assert batch["positions"][i, 0] == row["prompt_len"] - 1
        # the teacher's top-k at j is the store's row j (the teacher's distribution for that token)
        assert torch.equal(batch["teacher_topk_ids"][i, :n], torch.from_numpy(stored.topk_ids.astype("int64")))
        assert (batch["targets"][i, n:] == -100).all()
    assert len({r["prompt_len"] for r in rows}) > 1  # rows really have different prompt lengths


def test_one_hot_teacher_loss_is_the_completion_cross_entropy(one_hot_records, tmp_path):
    """KL(one-hot || student) = -log q(token): computed independently from the model's logits
    with the usual shift; an off-by-one anywhere in the trainer breaks the equality."""
    trainer = trainer_for(one_hot_records, tmp_path, chunk_size=3)
    rows = [trainer.train_dataset[i] for i in range(3)]
    batch = trainer.data_collator(rows)
    loss = trainer.compute_loss(trainer.model, batch)
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll, count = 0.0, 0
    for i, row in enumerate(rows):
        p, n = row["prompt_len"], len(row["input_ids"]) - row["prompt_len"]
        nll += torch.nn.functional.cross_entropy(logits[i, p - 1:p + n - 1], batch["input_ids"][i, p:p + n],
                                                 reduction="sum")
        count += n
    assert loss.item() == pytest.approx((nll / count).item(), rel=1e-5)


@pytest.mark.parametrize("divergence, beta", [("forward_kl", 0.5), ("jsd", 0.5), ("jsd", 0.9)])
def test_topk_equals_full_vocabulary_when_k_covers_the_support(scored_records, tmp_path, divergence, beta):
    """A teacher whose mass is all on its top-8: the stored top-k and the same distribution as
    full-vocabulary logits (-1e4 elsewhere) give the same trainer loss."""
    from llm_teach.trainers.distill import completion_hidden

    trainer = trainer_for(scored_records, tmp_path, divergence=divergence, jsd_beta=beta)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    model = trainer.model
    hidden = completion_hidden(model, batch["input_ids"], batch["attention_mask"], batch["positions"])
    head = model.get_output_embeddings()
    topk = trainer.distill_loss(hidden, head, batch["completion_mask"], batch["targets"],
                                teacher_topk_ids=batch["teacher_topk_ids"],
                                teacher_topk_logprobs=batch["teacher_topk_logprobs"])
    dense = torch.full((*batch["teacher_topk_ids"].shape[:2], model.config.vocab_size), -1e4)
    dense.scatter_(-1, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"])
    full = trainer.distill_loss(hidden, head, batch["completion_mask"], batch["targets"], teacher_logits=dense)
    assert topk.loss.item() == pytest.approx(full.loss.item(), rel=1e-5)


def test_teacher_equal_to_student_online_is_zero(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in zip(PROMPTS, COMPLETIONS)))
    out = tmp_path / "out"
    res = run_cli("train", "--method", "distill", "--model", "tiny-random", "--teacher", "tiny-random",
                  "--data", records, "--max-steps", "1", "--out", out, "--set", "divergence=jsd")
    assert res.returncode == 0, res.stderr[-2000:]
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert row["kd_loss"] == pytest.approx(0.0, abs=1e-6) and row["completion_tokens"] > 0


def test_distill_cli_from_stored_logits(scored_records, tmp_path):
    from llm_teach.models import load_model

    out = tmp_path / "out"
    res = run_cli("train", "--method", "distill", "--model", "tiny-random", "--data", scored_records,
                  "--max-steps", "4", "--out", out, "--learning-rate", "2e-3",
                  "--set", "per_device_train_batch_size=3", "--set", "lambda_ce=0.5", "--set", "temperature=2.0")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # With the teacher's tail kept (T=2 store tail), two near-uniform tiny-random models are ~1e-5
    # apart: KD is positive but at noise level, so the falling trend is checked on the total loss.
    assert rows[-1]["loss"] < rows[0]["loss"] and all(r["ce_loss"] > 0 and r["kd_loss"] > 0 for r in rows)
    trained, initial = load_model(str(out / "model"), device="cpu"), load_model("tiny-random", device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), initial.state_dict().values()))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["hash"].startswith("sha256:") and "warnings" not in manifest  # forward KL: none


def test_records_moved_with_their_store_are_found(scored_records, tmp_path):
    """`logits_ref.store` may be a path from another machine: a `logits/` folder next to the
    records file is used instead."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(scored_records.parent, moved)
    lines = [json.loads(line) for line in (moved / "records.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["logits_ref"]["store"] = "/elsewhere/logits"
    (moved / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    trainer = trainer_for(moved / "records.jsonl", tmp_path / "run")
    assert trainer.train_dataset[0]["store"] == str(moved / "logits")


def test_bad_distill_records_are_one_line_errors(scored_records, tmp_path):
    lines = scored_records.read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    first = json.loads(lines[1])
    del first["logits_ref"]
    mixed.write_text(lines[0] + "\n" + json.dumps(first) + "\n")
    res = run_cli("train", "--method", "distill", "--model", "tiny-random", "--data", mixed, "--out", tmp_path / "o")
    assert res.returncode == 2 and "all or none" in res.stderr and "Traceback" not in res.stderr
    no_teacher = tmp_path / "plain.jsonl"
    no_teacher.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    res = run_cli("train", "--method", "distill", "--model", "tiny-random", "--data", no_teacher, "--out", tmp_path / "o")
    assert res.returncode == 2 and "--teacher" in res.stderr
    assert not (tmp_path / "o").exists()


def test_records_are_checked_before_any_teacher_runs(tmp_path):
    """A record missing its completion is one line naming the file, line and key (exit 2), for
    an in-process teacher and for a served one (checked before any server is contacted: the URL
    here has nothing behind it), and nothing is written to OUT."""
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    for backend in (["--teacher-backend", "hf"],
                    ["--teacher-backend", "openai", "--teacher-base-url", "http://127.0.0.1:9/v1"]):
        res = run_cli("train", "--method", "distill", "--model", "tiny-random", "--teacher", "tiny-random",
                      "--data", records, "--out", tmp_path / "o", *backend)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
        assert f"{records}: line 2: missing key 'completion'" in lines[0]
    assert not (tmp_path / "o").exists()


def test_served_teacher_scores_each_record_once(scored_records, tmp_path, monkeypatch):
    """The served-teacher path (any Backend with score(top_k)): every record is scored into
    OUT/teacher_logits once, its records are written with logits_ref, and a second build (a
    resumed run) scores nothing again."""
    from llm_teach.backends.hf import HFBackend, HFConfig
    from llm_teach.trainers.distill import DistillConfig, _score_with_backend, read_distill_records

    class Counting(HFBackend):
        calls = 0

        def score(self, prompts, completions, top_k=0):
            Counting.calls += len(prompts)
            return super().score(prompts, completions, top_k=top_k)

    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "logits_ref"}) + "\n"
                             for line in scored_records.read_text().splitlines()))
    cfg = DistillConfig(model="tiny-random", data=str(plain), teacher="tiny-random?seed=1", teacher_backend="vllm",
                        teacher_top_k=8)
    records, mode = read_distill_records(cfg)
    assert mode == "online"
    teacher = Counting("tiny-random?seed=1", HFConfig(dtype="float32", device="cpu"))
    monkeypatch.setattr("llm_teach.trainers.distill.make_teacher", lambda cfg, tokenizer: teacher)
    scored_cfg, scored = _score_with_backend(cfg, tmp_path / "out", records, None)
    assert Counting.calls == len(records)
    again_cfg, again = _score_with_backend(cfg, tmp_path / "out", records, None)
    assert Counting.calls == len(records)  # nothing scored twice
    assert again == scored and again_cfg == scored_cfg
    written = [json.loads(line) for line in Path(scored_cfg.data).read_text().splitlines()]
    assert written == [r for _, r in scored] and scored_cfg.logit_store == str(tmp_path / "out" / "teacher_logits")
    expected = [json.loads(line)["logits_ref"] for line in scored_records.read_text().splitlines()]
    from llm_teach.data.logit_store import TopKLogitStore

    mine, reference = TopKLogitStore(scored_cfg.logit_store), TopKLogitStore(scored_records.parent / "logits")
    for rec, ref in zip(written, expected):
        a, b = mine.get(rec["logits_ref"]), reference.get(ref)
        assert a.token_ids.tolist() == b.token_ids.tolist() and a.topk_ids.tolist() == b.topk_ids.tolist()
