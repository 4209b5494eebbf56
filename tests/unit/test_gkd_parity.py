"""Parity of `train --method gkd`'s loss with TRL's GKD loss.

Reference: trl 1.16.0, `trl.experimental.gkd.GKDTrainer.generalized_jsd_loss(student_logits,
teacher_logits, labels, beta, temperature)` on the shifted logits/labels, as TRL's own
`GKDTrainer.compute_loss` calls it (`logits[:, :-1]`, `labels[:, 1:]`). Ours is
`llm_teach.trainers.gkd.gkd_loss` (hidden states + lm-heads, tiled), on the same tiny
in-memory models and batch; both must agree within 1e-5 for beta in {0, 0.5, 1} at T != 1.
"""

from __future__ import annotations

import pytest
import torch
import trl
from transformers import LlamaConfig, LlamaForCausalLM
from trl.experimental.gkd import GKDTrainer as TRLGKD

from llm_teach.trainers.gkd import GKDCollator, gkd_loss, local_teacher, make_loss

TEMPERATURE = 1.7


def _tiny(seed: int, sharpness: float) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random init is near-uniform; sharpen so the divergences are far from 0
        model.get_output_embeddings().weight.mul_(sharpness)
    return model


@pytest.fixture(scope="module")
def models_and_batch():
    student, teacher = _tiny(0, 20.0), _tiny(1, 40.0)
    g = torch.Generator().manual_seed(2)
    rows = [{"prompt_ids": torch.randint(1, 61, (n,), generator=g).tolist(),
             "completion_ids": torch.randint(1, 61, (c,), generator=g).tolist(), "index": i}
            for i, (n, c) in enumerate([(5, 7), (3, 4), (6, 9)])]
    return student, teacher, GKDCollator(pad_id=0)(rows)


def _trl_loss(student, teacher, batch, beta: float) -> torch.Tensor:
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
          "position_ids": (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)}
    return TRLGKD.generalized_jsd_loss(student(**kw).logits[:, :-1], teacher(**kw).logits[:, :-1],
                                       labels=batch["labels"][:, 1:], beta=beta, temperature=TEMPERATURE)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_loss_equals_trl_generalized_jsd(models_and_batch, beta):
    assert trl.__version__ == "1.16.0", "the reference function is trl 1.16.0's; re-check the parity on upgrade"
    student, teacher, batch = models_and_batch
    head_t = teacher.get_output_embeddings()
    ours = gkd_loss(make_loss(beta, TEMPERATURE, chunk_size=5), student, student.get_output_embeddings(), batch,
                    lambda inputs, mask: local_teacher(teacher, head_t, inputs))
    with torch.no_grad():
        reference = _trl_loss(student, teacher, batch, beta)
    assert reference.item() > 0.05  # two different models: a real divergence, not 0 == 0
    assert ours.num_tokens.item() == (batch["labels"] != -100).sum().item()  # every completion token, no other
    assert abs(ours.loss.item() - reference.item()) < 1e-5, (beta, ours.loss.item(), reference.item())


def test_beta_ends_are_forward_and_reverse_kl(models_and_batch):
    """TRL's convention, stated: beta 0 = KL(teacher || student), beta 1 = KL(student || teacher)."""
    student, teacher, batch = models_and_batch
    with torch.no_grad():
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        s = (student(**kw).logits[:, :-1] / TEMPERATURE).log_softmax(-1)
        t = (teacher(**kw).logits[:, :-1] / TEMPERATURE).log_softmax(-1)
        mask = batch["labels"][:, 1:] != -100
        forward = (t.exp() * (t - s)).sum(-1)[mask].mean()
        reverse = (s.exp() * (s - t)).sum(-1)[mask].mean()
        assert abs(_trl_loss(student, teacher, batch, 0.0).item() - forward.item()) < 1e-5
        assert abs(_trl_loss(student, teacher, batch, 1.0).item() - reverse.item()) < 1e-5
