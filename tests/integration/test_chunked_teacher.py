"""`TiledDistillLoss` (both models' logits built per tile of flattened valid rows) against a dense
reference: values and gradients for every divergence, T != 1, masks with fully masked rows and
weights, tile sizes that do not divide the row count, every head kind (weight, frozen weight,
tied embedding, module, callable), the online teacher's top-k and vocabulary fitting; no
gradient into the teacher; no tensor wider than a tile; and the distill trainer's online path."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from llm_teach.data.logit_store import PAD_LOGPROB
from llm_teach.trainers.losses.distill import DistillLoss
from llm_teach.trainers.losses.tiled import TiledDistillLoss

B, T, H, HT, V = 3, 7, 8, 6, 23
DIVERGENCES = [
    dict(divergence="forward_kl", temperature=2.5),
    dict(divergence="reverse_kl", temperature=0.7),
    dict(divergence="jsd", jsd_beta=0.3, temperature=2.0),
    dict(divergence="jsd", jsd_beta=0.5, temperature=1.0, lambda_ce=0.5, lambda_kd=2.0),
]


def _inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=dtype, requires_grad=True)
    t_hidden = torch.randn(B, T, HT, generator=g, dtype=dtype, requires_grad=True)
    t_weight = (torch.randn(V, HT, generator=g, dtype=dtype) * 2).requires_grad_()
    mask = torch.ones(B, T, dtype=dtype)
    mask[0, -3:] = 0  # padding at the end of a row
    mask[1] = 0  # a fully masked row
    mask[2, 1] = 0.5  # a weighted position counts half, as in DistillLoss
    targets = torch.randint(0, V, (B, T), generator=g)
    return hidden, weight, t_hidden, t_weight, mask, targets


def _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets):
    """The reference: DistillLoss on the full [B, T, V] logits of both models."""
    return DistillLoss(**kwargs)(hidden @ weight.T, mask, targets, teacher_logits=(t_hidden @ t_weight.T).detach())


def _check(out, ref, grads, ref_grads, atol):
    for name, a, b in zip(out._fields, out, ref):
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=0, msg=name)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("kwargs", DIVERGENCES)
@pytest.mark.parametrize("tile_rows", [1, 4, 100])
def test_values_and_gradients_equal_the_dense_loss(kwargs, tile_rows):
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    assert int((mask != 0).sum()) == 11  # a tile of 4 leaves a last tile of 3
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    loss = TiledDistillLoss(tile_rows=tile_rows, **kwargs)
    out = loss(hidden, weight, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
    grads = torch.autograd.grad(out.loss, (hidden, weight), retain_graph=True)
    _check(out, ref, grads, ref_grads, atol=1e-12)
    out.loss.backward()
    assert t_hidden.grad is None and t_weight.grad is None  # nothing flows into the teacher


@pytest.mark.parametrize("kwargs", DIVERGENCES)
def test_float32_within_1e6_of_the_dense_loss(kwargs):
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs(torch.float32, seed=3)
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, weight, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_weight)
    _check(out, ref, torch.autograd.grad(out.loss, (hidden, weight)), ref_grads, atol=1e-6)


class _Wrapped(nn.Module):
    """A head that is not a plain Linear (as a LoRA- or ZeRO-3-wrapped lm_head is)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return x @ self.weight.T


@pytest.mark.parametrize("head_kind", ["linear", "module", "callable"])
def test_every_head_kind_gives_the_dense_gradients(head_kind):
    kwargs = DIVERGENCES[2]
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    linear = nn.Linear(H, V, bias=False, dtype=torch.float64)
    linear.weight = nn.Parameter(weight.detach().clone())
    head = {"linear": linear, "module": _Wrapped(linear.weight), "callable": lambda x: x @ linear.weight.T}[head_kind]
    t_head = _Wrapped(t_weight) if head_kind == "module" else t_weight
    out = TiledDistillLoss(tile_rows=5, **kwargs)(hidden, head, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_head)
    out.loss.backward()
    _check(out, ref, (hidden.grad, linear.weight.grad), ref_grads, atol=1e-12)
    assert t_weight.grad is None and t_hidden.grad is None


def test_frozen_head_gets_no_gradient_and_hidden_still_does():
    """A LoRA student's lm_head is frozen: only the hidden states get a gradient."""
    kwargs = DIVERGENCES[0]
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    (ref_grad,) = torch.autograd.grad(ref.loss, hidden)
    frozen = weight.detach()
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, frozen, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_weight)
    out.loss.backward()
    torch.testing.assert_close(hidden.grad, ref_grad, atol=1e-12, rtol=0)
    assert frozen.grad is None


def test_tied_embedding_accumulates_both_gradients():
    """Tied embeddings: the head weight is also the input embedding; its gradient is the sum of
    both uses, as with the dense loss."""
    kwargs = DIVERGENCES[1]
    _, _, t_hidden, t_weight, mask, targets = _inputs()
    emb = nn.Embedding(V, H, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(5))

    def grad(use_tiles):
        emb.weight.grad = None
        hidden = torch.tanh(emb(ids))
        if use_tiles:
            out = TiledDistillLoss(tile_rows=3, **kwargs)(hidden, emb.weight, mask, targets,
                                                          teacher_hidden=t_hidden, teacher_head=t_weight)
        else:
            out = _dense(kwargs, hidden, emb.weight, t_hidden, t_weight, mask, targets)
        out.loss.backward()
        return emb.weight.grad.clone()

    torch.testing.assert_close(grad(True), grad(False), atol=1e-12, rtol=0)


@pytest.mark.parametrize("t_vocab", [V - 4, V + 3])
def test_online_teacher_vocabulary_is_cut_or_padded_to_the_students(t_vocab):
    kwargs = DIVERGENCES[0]
    hidden, weight, t_hidden, _, mask, targets = _inputs()
    t_weight = torch.randn(t_vocab, HT, dtype=torch.float64)
    t_logits = t_hidden.detach() @ t_weight.T
    fitted = t_logits[..., :V] if t_vocab > V else torch.nn.functional.pad(t_logits, (0, V - t_vocab),
                                                                           value=PAD_LOGPROB)
    ref = DistillLoss(**kwargs)(hidden @ weight.T, mask, targets, teacher_logits=fitted)
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, weight, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_weight)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-12, rtol=0)


@pytest.mark.parametrize("stored", [False, True])
def test_top_k_teacher_online_and_stored_equal_the_plain_top_k_loss(stored):
    kwargs = dict(divergence="jsd", jsd_beta=0.4, temperature=2.0)
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    logprobs, ids = (t_hidden.detach() @ t_weight.detach().T).log_softmax(-1).topk(5, dim=-1)
    ref = DistillLoss(**kwargs)(hidden @ weight.T, mask, targets, teacher_topk_ids=ids,
                                teacher_topk_logprobs=logprobs)
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    if stored:
        teacher = dict(teacher_topk_ids=ids, teacher_topk_logprobs=logprobs)
        out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, weight, mask, targets, **teacher)
    else:
        out = TiledDistillLoss(tile_rows=4, teacher_top_k=5, **kwargs)(
            hidden, weight, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
    _check(out, ref, torch.autograd.grad(out.loss, (hidden, weight)), ref_grads, atol=1e-12)


def test_fully_masked_batch_is_a_zero_loss_with_zero_gradients():
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    for head in (weight, _Wrapped(weight)):
        out = TiledDistillLoss(tile_rows=4)(hidden, head, torch.zeros(B, T), targets, teacher_hidden=t_hidden,
                                            teacher_head=t_weight)
        hidden.grad = weight.grad = None
        out.loss.backward()
        assert out.loss.item() == 0.0 and out.num_tokens.item() == 0
        assert not hidden.grad.any()


def test_no_grad_gives_the_same_values():
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    loss = TiledDistillLoss(tile_rows=4, **DIVERGENCES[3])
    with_grad = loss(hidden, weight, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
    with torch.no_grad():
        without = loss(hidden, weight, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
    for a, b in zip(with_grad, without):
        torch.testing.assert_close(a.detach(), b, atol=1e-12, rtol=0)


class _VocabWide(TorchDispatchMode):
    """Records the row count (the dim before the vocabulary: JSD stacks two [rows, V] tensors) of
    every tensor an op creates whose last dim is the vocabulary."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == V:
                self.rows.append(t.shape[-2])
        return out


@pytest.mark.parametrize("batch", [2, 8])
def test_no_tensor_is_wider_than_one_tile_whatever_the_batch(batch):
    """Neither model's [rows, V] logits (or anything derived) ever exceeds one tile, forward and
    backward, so peak memory does not grow with the batch."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(batch, 16, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    t_hidden, t_weight = torch.randn(batch, 16, HT, generator=g), torch.randn(V, HT, generator=g)
    for kwargs in DIVERGENCES:
        with _VocabWide() as seen:
            TiledDistillLoss(tile_rows=6, **kwargs)(hidden, weight, torch.ones(batch, 16), torch.zeros(
                batch, 16, dtype=torch.long), teacher_hidden=t_hidden, teacher_head=t_weight).loss.backward()
        rows = [r for r in seen.rows if r != H]  # the head's transpose [H, V] aside
        assert rows and max(rows) <= 6, (kwargs, max(rows))


# --- the distill trainer's online teacher ---------------------------------------------------------


@pytest.fixture(scope="module")
def online_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    rows = [{"prompt": f"What is {i} + {i}?", "teacher_prompt": f"Hint: double it. What is {i} + {i}?",
             "completion": f"{i} + {i} = {2 * i}. The answer is {2 * i}."} for i in range(8)]
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "records.jsonl"


def _trainer(records, tmp, **extra):
    from llm_teach.trainers.distill import DistillConfig, build_trainer

    cfg = DistillConfig(model="tiny-random", teacher="tiny-random?seed=1", data=str(records), **extra)
    return build_trainer(cfg, tmp)


@pytest.mark.parametrize("extra", [dict(divergence="jsd", temperature=2.0), dict(lora_r=4, chunk_size=5)])
def test_trainer_online_loss_is_the_dense_loss_of_both_models(online_records, tmp_path, extra):
    """The trainer's online-teacher loss equals DistillLoss on both models' full logits at the
    completion positions (tiny-random ties its embeddings; the LoRA student's head is frozen)."""
    trainer = _trainer(online_records, tmp_path, max_steps=1, **extra)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(trainer.model, batch)
    student = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        teacher = trainer.teacher(input_ids=batch["teacher_input_ids"],
                                  attention_mask=batch["teacher_attention_mask"]).logits
    gather = lambda x, pos: x.gather(1, pos[..., None].expand(-1, -1, x.size(-1)))  # noqa: E731
    ref = DistillLoss(divergence=extra.get("divergence", "forward_kl"), temperature=extra.get("temperature", 1.0))(
        gather(student, batch["positions"]), batch["completion_mask"], batch["targets"],
        teacher_logits=gather(teacher, batch["teacher_positions"]))
    assert loss.item() == pytest.approx(ref.loss.item(), rel=1e-5, abs=1e-7)
    assert loss.item() > 1e-4  # a different teacher: the check is not 0 == 0
    loss.backward()
    assert all(p.grad is None for p in trainer.teacher.parameters())


def test_trainer_online_distillation_lowers_the_loss(online_records, tmp_path):
    trainer = _trainer(online_records, tmp_path, max_steps=6, learning_rate=3e-3, per_device_train_batch_size=8,
                       divergence="forward_kl", temperature=2.0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    with torch.no_grad():
        before = trainer.compute_loss(trainer.model, batch).item()
    trainer.train()
    with torch.no_grad():
        after = trainer.compute_loss(trainer.model, batch).item()
    assert after < 0.8 * before, (before, after)
