"""Distill records as the student should see them: online completions end with the end-of-turn
token, and plain-text prompts go through the chat template unless `chat: false`."""

from __future__ import annotations

import json

import pytest

TEXT_PROMPTS = [f"What is {i}+{i}?" for i in range(3)]
COMPLETIONS = [f"{2 * i}. The answer is \\boxed{{{2 * i}}}." for i in range(3)]


def online_trainer(tmp_path, **extra):
    from llm_teach.trainers.distill import DistillConfig, build_trainer

    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({"prompt": p, "teacher_prompt": "Hint: double. " + p, "completion": c})
                               + "\n" for p, c in zip(TEXT_PROMPTS, COMPLETIONS)))
    cfg = DistillConfig(model="tiny-random", teacher="tiny-random?seed=1", data=str(records), max_steps=1, **extra)
    return build_trainer(cfg, tmp_path / "out")


@pytest.mark.parametrize("chat", [True, False])
def test_online_completions_end_with_the_end_of_turn_token(tmp_path, chat):
    from llm_teach.models import load_tokenizer

    tok = load_tokenizer("tiny-random")
    trainer = online_trainer(tmp_path, chat=chat)
    rows = [trainer.train_dataset[i] for i in range(3)]
    batch = trainer.data_collator(rows)
    for i, (row, prompt, completion) in enumerate(zip(rows, TEXT_PROMPTS, COMPLETIONS)):
        body = tok(completion, add_special_tokens=False)["input_ids"]
        expected = body + [tok.eos_token_id]
        assert row["input_ids"][row["prompt_len"]:] == expected  # student side
        assert row["teacher_input_ids"][row["teacher_prompt_len"]:] == expected  # teacher scores it too
        n = len(expected)
        assert batch["completion_mask"][i].sum() == n  # the EOS position is in the loss
        assert batch["targets"][i, n - 1] == tok.eos_token_id
        prompt_ids = row["input_ids"][:row["prompt_len"]]
        if chat:
            messages = [{"role": "user", "content": prompt}]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            assert prompt_ids == tok(text, add_special_tokens=False)["input_ids"]
        else:
            assert prompt_ids == tok(prompt, add_special_tokens=True)["input_ids"]


def test_end_turns_is_idempotent_and_leaves_stored_completions_and_messages():
    from llm_teach.models import load_tokenizer
    from llm_teach.trainers.records import end_turns

    tok = load_tokenizer("tiny-random")
    messages = [{"role": "user", "content": "hi"}]
    records = [("f: line 1", {"prompt": "hi", "completion": "yo"}),
               ("f: line 2", {"prompt": messages, "completion": "yo" + tok.eos_token})]
    once = end_turns(records, True, True, tok)
    assert [r["completion"] for _, r in once] == ["yo" + tok.eos_token] * 2
    assert [r["prompt"] for _, r in once] == [messages, messages]
    assert end_turns(once, True, True, tok) == once
    stored = end_turns(records, False, False, tok)
    assert [r for _, r in stored] == [r for _, r in records]
    assert records[0][1]["completion"] == "yo"  # inputs are not modified in place


@pytest.mark.parametrize("chat", [True, False])
def test_sft_already_trains_on_the_end_of_turn_token(tmp_path, chat):
    """SFT has no such gap: TRL appends EOS to plain completions and the chat template closes the
    assistant turn; either way the last trained label is the EOS token."""
    from llm_teach.trainers.sft import SFTConfig, build_trainer

    records = tmp_path / "sft.jsonl"
    records.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n"
                               for p, c in zip(TEXT_PROMPTS, COMPLETIONS)))
    trainer = build_trainer(SFTConfig(model="tiny-random", data=str(records), max_steps=1, chat=chat), tmp_path / "o")
    labels = trainer.data_collator([trainer.train_dataset[0]])["labels"][0].tolist()
    trained = [t for t in labels if t != -100]
    eos = trainer.processing_class.eos_token_id
    assert eos in trained[-2:]  # the chat template adds a newline after <|im_end|>
