"""How sharp is a model on the gold worked solutions? (eval/RESULTS.md, logit KD's paragraph)

    python eval/experiments/teacher_sharpness.py runs/cpu-compare/teacher/model smollm2-135m [--pairs N]

For each model: mean next-token entropy over the completion tokens of the first N training
pairs (prompt through the chat template, as the trainers see it), mean probability of the gold
token, and the fraction of tokens where that probability exceeds 0.99. A teacher that is one-hot
on the gold tokens gives logit distillation nothing that SFT on gold does not.
"""

from __future__ import annotations

import argparse
import json

import torch


def sharpness(model_spec: str, pairs: list[dict]) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_teach.models import prepare

    path = prepare(model_spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    entropies, gold = [], []
    for pair in pairs:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": pair["prompt"]}], tokenize=False,
                                               add_generation_prompt=True)
        a = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(pair["completion"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([a + c])).logits[0, len(a) - 1:-1].log_softmax(-1)
        entropies += (-(logp.exp() * logp).sum(-1)).tolist()
        gold += logp[range(len(c)), c].exp().tolist()
    n = len(gold)
    return {"tokens": n, "entropy_nats": sum(entropies) / n, "p_gold": sum(gold) / n,
            "share_p_gold_above_0.99": sum(g > 0.99 for g in gold) / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--pairs", default="eval/experiments/data/chain_sum3/train-pairs.jsonl")
    ap.add_argument("-n", type=int, default=64)
    args = ap.parse_args()
    with open(args.pairs, encoding="utf-8") as f:
        pairs = [json.loads(line) for _, line in zip(range(args.n), f)]
    for spec in args.models:
        print(spec, json.dumps({k: round(v, 4) for k, v in sharpness(spec, pairs).items()}))


if __name__ == "__main__":
    main()
