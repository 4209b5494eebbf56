"""The teacher-hacking watch on a REAL short run, with the situation built on purpose.

A "good" student is tiny-random taught (plain torch, a few dozen AdamW steps) to answer every
"What is A plus B?" with `\\boxed{7}`, and held-out problems of that family have gold answer 7,
so it starts at accuracy 1.0. The teacher has a planted flaw: the same model taught to answer
`\\boxed{3}`. Distilling the student from that teacher (`train --method gkd`, forward KL on the
dataset's completions) makes the proxy (KL to the teacher on held-out answers) fall while the
golden signal (accuracy, and the divergence to the good model as `--reference`) gets worse:
the watch must fire after K evaluations, stop the run, and keep the best model by the golden
signal in OUT/best-golden (which still answers 7).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llm_teach.trainers import train

K = 3  # hacking_patience


def questions(seed: int, n: int) -> list[str]:
    r = random.Random(seed)
    return [f"What is {r.randint(10, 99)} plus {r.randint(10, 99)}?" for _ in range(n)]


def write_problems(path: Path, seed: int, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": "7", "solution": "\\boxed{7}"}) + "\n"
                            for i, q in enumerate(questions(seed, n))))
    return path


def taught(answer: int, out: Path, steps: int = 30, lr: float = 3e-3) -> Path:
    """tiny-random taught to answer `\\boxed{answer}` to the training questions: AdamW on the
    completion tokens only (the lm-head projects only those positions: the 49k vocabulary is
    the cost), one batch of 6 problems."""
    import torch
    from transformers import AutoModelForCausalLM

    from llm_teach.backends.base import encode_prompt
    from llm_teach.models import load_tokenizer, prepare
    from llm_teach.trainers.records import problem_prompt
    from llm_teach.trainers.train_config import TrainConfig

    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny-random")
    model = AutoModelForCausalLM.from_pretrained(prepare("tiny-random"))
    template = TrainConfig.__dataclass_fields__["template"].default
    completion = tokenizer(f"\\boxed{{{answer}}}" + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    prompts = [encode_prompt(tokenizer, problem_prompt(q, template)) for q in questions(0, 6)]
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p + completion for p in prompts])
    attention = (torch.arange(ids.size(1)) >= (width - torch.tensor([len(p) for p in prompts]))[:, None]).long()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    target = torch.tensor(completion).expand(len(prompts), -1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        hidden = model.model(input_ids=ids, attention_mask=attention, position_ids=positions).last_hidden_state
        logits = model.lm_head(hidden[:, width - 1:-1])  # the positions predicting the completion
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def greedy_answers(model_dir: Path, problems: Path) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM

    from llm_teach.backends.base import encode_prompt
    from llm_teach.data import load_problems
    from llm_teach.models import load_tokenizer
    from llm_teach.trainers.records import problem_prompt
    from llm_teach.trainers.train_config import TrainConfig

    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    template = TrainConfig.__dataclass_fields__["template"].default
    texts = []
    for p in load_problems(str(problems)):
        ids = torch.tensor([encode_prompt(tokenizer, problem_prompt(p.question, template))])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, ids.size(1):], skip_special_tokens=True))
    return texts


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hacking")
    return {"good": taught(7, root / "good"), "flawed": taught(3, root / "flawed"),
            "train": write_problems(root / "train.jsonl", 0, 6), "held_out": write_problems(root / "held.jsonl", 99, 4)}


def test_planted_models(planted):
    assert all("\\boxed{7}" in t for t in greedy_answers(planted["good"], planted["held_out"]))
    assert all("\\boxed{3}" in t for t in greedy_answers(planted["flawed"], planted["held_out"]))


def test_watch_fires_and_keeps_the_best(tmp_path, planted):
    out = tmp_path / "gkd"
    values = {"model": str(planted["good"]), "teacher": str(planted["flawed"]), "data": str(planted["train"]),
              "per_device_train_batch_size": 6, "lmbda": 0.0, "beta": 0.0, "temperature": 1.0,
              "learning_rate": 1e-3, "lr_scheduler_type": "constant", "max_steps": 8, "hacking_watch_steps": 1,
              "hacking_eval_data": str(planted["held_out"]), "hacking_max_new_tokens": 6,
              "hacking_patience": K, "reference": str(planted["good"]), "stop_on_teacher_hacking": True}
    train("gkd", values, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    watched = [r for r in rows if "hacking_proxy" in r]
    assert [r["step"] for r in watched] == list(range(1, len(watched) + 1)), rows  # every step
    assert watched[0]["hacking_accuracy"] == 1.0 and watched[-1]["hacking_accuracy"] < 1.0, watched  # accuracy fell
    # over the last K evaluations the proxy kept falling while the divergence to the reference grew
    streak = watched[-K - 1:]
    assert all(b["hacking_proxy"] < a["hacking_proxy"] for a, b in zip(streak, streak[1:])), watched
    assert all(b["hacking_reference_kl"] > a["hacking_reference_kl"] for a, b in zip(streak, streak[1:])), watched
    # fired exactly when the streak first reached K, and the run stopped there (early)
    fired = [r["step"] for r in watched if r["hacking_detected"]]
    assert fired == [watched[-1]["step"]], watched
    assert watched[-1]["hacking_streak"] == K and all(r["hacking_streak"] < K for r in watched[:-1])
    assert max(r["step"] for r in rows) == fired[0] < values["max_steps"]
    # the best model by the golden signal, kept at its step; it still answers 7
    best = json.loads((out / "best-golden" / "best.json").read_text())
    golden = max(watched, key=lambda r: (r["hacking_accuracy"], -r["hacking_reference_kl"]))
    assert best["step"] == golden["step"] < fired[0]
    assert all("\\boxed{7}" in t for t in greedy_answers(out / "best-golden", planted["held_out"]))
