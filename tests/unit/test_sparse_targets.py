"""Sparse teacher targets that keep the teacher's tail (issue 11, section 1): the tail-bucket and
sampled-tail divergences against dense references, store v2 / v1 handling, and the backends'
tail. Fast: no model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llm_teach.backends.base import TailRequest, TokenLogprobs, refuse_tail
from llm_teach.data.logit_store import TopKLogitStore, TopKLogitWriter, append_scored, open_writer, tail_request
from llm_teach.data.sparse_targets import (loss_inputs, sample_log_weights, sparse_from_logits, store_tail_problem,
                                           tail_from_topk)
from llm_teach.errors import UserError
from llm_teach.trainers.losses.distill import DistillLoss, dense_divergence, topk_divergence
from llm_teach.trainers.losses.divergences import forward_kl, jsd, reverse_kl
from llm_teach.trainers.losses.sparse import sparse_divergence

TEMPS = (1.0, 2.0)
DIVERGENCES = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.9)]


def _dense_reference(div: str, beta: float):
    return {"forward_kl": forward_kl, "reverse_kl": reverse_kl}.get(div, lambda s, t: jsd(s, t, beta))


def _collapse(logps: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """A dense distribution [..., V] coarsened to the K ids + one bucket for everything else."""
    support = logps.gather(-1, ids)
    rest = logps.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([support, rest], -1)


def _pair(seed: int = 0, shape=(2, 5), vocab: int = 64, heavy: bool = False):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * (0.7 if heavy else 3.0)
    if heavy:  # a few clear winners over a long, nearly flat tail
        teacher[..., :4] += 4.0
    student = torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * 2.0
    return teacher, student


@pytest.mark.parametrize("div, beta", DIVERGENCES)
@pytest.mark.parametrize("temperature", TEMPS)
def test_tail_bucket_equals_dense_collapsed_to_support_and_tail(div, beta, temperature):
    teacher, student = _pair()
    k = 8
    target = sparse_from_logits(teacher.double(), k, TEMPS)
    got = sparse_divergence(student, target.ids, target.logprobs.double(),
                            target.log_tail[..., TEMPS.index(temperature)].double(), None, div, beta, temperature)
    t_logps, s_logps = (teacher / temperature).log_softmax(-1), (student / temperature).log_softmax(-1)
    want = _dense_reference(div, beta)(_collapse(s_logps, target.ids), _collapse(t_logps, target.ids))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the coarsening can only lose information (data processing): a lower bound of the full value
    assert (got <= dense_divergence(student, teacher, div, beta, temperature) + 1e-6).all()


def test_tail_at_the_wrong_temperature_is_caught():
    """The planted bug 'tail mass taken at T=1 while the loss runs at T=2' moves the value far
    outside the tolerance of the exactness test above."""
    teacher, student = _pair(heavy=True)
    target = sparse_from_logits(teacher, 8, TEMPS)
    right = sparse_divergence(student, target.ids, target.logprobs, target.log_tail[..., 1], None, temperature=2.0)
    wrong = sparse_divergence(student, target.ids, target.logprobs, target.log_tail[..., 0], None, temperature=2.0)
    assert (right - wrong).abs().max() > 1e-2


def test_tail_is_closer_to_full_vocabulary_than_renormalized_on_a_heavy_tail():
    teacher, student = _pair(shape=(4, 16), vocab=512, heavy=True)
    for temperature in TEMPS:
        target = sparse_from_logits(teacher, 16, TEMPS)
        i = TEMPS.index(temperature)
        full = dense_divergence(student, teacher, temperature=temperature).mean()
        renorm = topk_divergence(student, target.ids, target.logprobs, temperature=temperature).mean()
        tail = sparse_divergence(student, target.ids, target.logprobs, target.log_tail[..., i], None,
                                 temperature=temperature).mean()
        assert abs(tail - full) < 0.5 * abs(renorm - full), (temperature, full, renorm, tail)


@pytest.mark.parametrize("div, beta", DIVERGENCES[:3])
@pytest.mark.parametrize("temperature", TEMPS)
def test_sampled_tail_is_unbiased(div, beta, temperature):
    """Averaged over seeds, the sampled-tail estimate (samples drawn at T=2, reweighted for a loss
    at T=1) equals the full-vocabulary divergence within 4 standard errors; the tail bucket of the
    same top-k is biased low by many standard errors on this heavy tail, so the test has power."""
    teacher, student = _pair(shape=(1, 3), vocab=256, heavy=True)
    k, m, seeds = 4, 8, 1000
    i, s = TEMPS.index(temperature), TEMPS.index(2.0)
    # `seeds` independent draws at once: the same positions repeated along the batch dimension
    teacher, student = teacher.expand(seeds, 3, 256), student.expand(seeds, 3, 256)
    target = sparse_from_logits(teacher, k, TEMPS, m, 2.0, torch.Generator().manual_seed(0))
    w = sample_log_weights(target.logprobs, k, target.log_tail[..., s], 2.0)
    values = sparse_divergence(student, target.ids, target.logprobs, target.log_tail[..., i], w, div, beta, temperature)
    full = dense_divergence(student[:1], teacher[:1], div, beta, temperature)
    err = values.std(0) / math.sqrt(seeds)
    assert ((values.mean(0) - full).abs() <= 4 * err + 1e-9).all(), (values.mean(0), full, err)
    bucket = sparse_divergence(student[:1], target.ids[:1, :, :k], target.logprobs[:1, :, :k],
                               target.log_tail[:1, :, i], None, div, beta, temperature)
    assert ((full - bucket) > 8 * err).any()


def test_sampled_tail_gradient_is_unbiased():
    teacher, student = _pair(shape=(1, 2), vocab=128, heavy=True)
    k, m, seeds = 4, 8, 1000
    target = sparse_from_logits(teacher.expand(seeds, 2, 128), k, TEMPS, m, 2.0, torch.Generator().manual_seed(0))
    w = sample_log_weights(target.logprobs, k, target.log_tail[..., 1], 2.0)
    x = student.expand(seeds, 2, 128).clone().requires_grad_()  # one independent student copy per draw
    sparse_divergence(x, target.ids, target.logprobs, target.log_tail[..., 1], w, temperature=2.0).sum().backward()
    grads = x.grad
    x = student.clone().requires_grad_()
    dense_divergence(x, teacher, temperature=2.0).sum().backward()
    err = grads.std(0) / math.sqrt(seeds)
    assert ((grads.mean(0) - x.grad[0]).abs() <= 4 * err + 1e-7).all()


# -- store: version 2 round trip, version 1 kept readable -------------------------------------


def _scored(teacher: torch.Tensor, k: int, tail: TailRequest | None) -> TokenLogprobs:
    """What the hf backend's score() returns for full teacher logits [C, V]."""
    logp = teacher.float().log_softmax(-1)
    tokens = logp.argmax(-1).tolist()
    values, ids = logp.topk(k, dim=-1)
    out = TokenLogprobs(tokens, logp.gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist(),
                        [dict(zip(i.tolist(), v.tolist())) for i, v in zip(ids, values)])
    if tail is not None:
        from llm_teach.backends.hf import _add_tail

        _add_tail(out, logp, k, tail)
    return out


def test_v2_store_round_trip_gives_the_exact_sparse_loss(tmp_path):
    teacher, student = _pair(shape=(6,), vocab=96, heavy=True)
    k, m = 6, 5
    with open_writer(tmp_path / "s", k=k, dtype="float32", tail_temperatures=[1.0, 2.0], samples=m,
                     sample_temperature=2.0) as w:
        request = tail_request(w, seed=3)
        ref = append_scored(w, "a", _scored(teacher, k, request["tail"]))
    store = TopKLogitStore(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["version"] == 2
    assert (store.k, store.samples, store.tail_temperatures) == (k, m, [1.0, 2.0])
    rec = store.get(ref)
    assert rec.topk_ids.shape == (6, k + m) and rec.log_tail.shape == (6, 2)
    exact = sparse_from_logits(teacher, k, TEMPS)
    for temperature in TEMPS:
        inputs = loss_inputs(store.meta, rec.topk_ids, rec.topk_logprobs, rec.log_tail, temperature)
        np.testing.assert_allclose(inputs["teacher_log_tail"], exact.log_tail[:, TEMPS.index(temperature)], atol=1e-5)
        # the exact part (bucket form) equals the dense collapsed reference
        bucket = sparse_divergence(student[None].float(), inputs["teacher_topk_ids"][None, :, :k],
                                   inputs["teacher_topk_logprobs"][None, :, :k], inputs["teacher_log_tail"][None],
                                   None, temperature=temperature)
        t_logps, s_logps = (teacher / temperature).log_softmax(-1), (student / temperature).log_softmax(-1)
        ids = inputs["teacher_topk_ids"][:, :k]
        want = forward_kl(_collapse(s_logps, ids), _collapse(t_logps, ids))
        torch.testing.assert_close(bucket[0].double(), want, rtol=1e-4, atol=1e-5)
        assert inputs["teacher_sample_log_weights"].shape == (6, m)
    # the draws are seeded by the completion: scoring again gives the same samples
    again = _scored(teacher, k, request["tail"])
    assert [list(map(int, r[k:])) for r in rec.topk_ids] == [[i for i, _ in row] for row in again.tail_samples]


def _v1_store(root, teacher: torch.Tensor, k: int):
    """A store exactly as version 1 wrote it: same files, meta without the tail fields."""
    with TopKLogitWriter(root, k=k, dtype="float16") as w:
        ref = append_scored(w, "a", _scored(teacher, k, None))
    meta = json.loads((root / "meta.json").read_text())
    for key in ("tail_temperatures", "samples", "sample_temperature"):
        del meta[key]
    (root / "meta.json").write_text(json.dumps(meta | {"version": 1}))
    return ref


def test_v1_store_reads_as_before_and_gives_the_t1_tail(tmp_path):
    teacher, student = _pair(shape=(5,), vocab=80)
    ref = _v1_store(tmp_path, teacher, k=8)
    store = TopKLogitStore(tmp_path)
    rec = store.get(ref)
    assert rec.log_tail is None and rec.topk_ids.shape == (5, 8) and store.tail_temperatures == []
    # T=1: the tail follows from the stored top-k (float16) alone
    assert store_tail_problem(store.meta, 1.0) is None
    inputs = loss_inputs(store.meta, rec.topk_ids, rec.topk_logprobs, None, 1.0)
    exact = sparse_from_logits(teacher, 8, (1.0,))
    np.testing.assert_allclose(inputs["teacher_log_tail"], exact.log_tail[:, 0], atol=2e-2)
    # T=2: refused with a message that says what to do
    problem = store_tail_problem(store.meta, 2.0)
    assert "version-1" in problem and "renormalize" in problem and "2" in problem
    with pytest.raises(ValueError, match="version-1"):
        loss_inputs(store.meta, rec.topk_ids, rec.topk_logprobs, None, 2.0)
    # a writer may resume it only as version 1
    with pytest.raises(UserError, match="version 1"):
        open_writer(tmp_path, k=8, tail_temperatures=[1.0, 2.0])
    with open_writer(tmp_path, k=8) as w:
        assert len(w) == 1
    assert json.loads((tmp_path / "meta.json").read_text())["version"] == 1


def test_unknown_store_version_is_a_clear_error(tmp_path):
    teacher, _ = _pair(shape=(3,), vocab=40)
    _v1_store(tmp_path, teacher, k=4)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps(meta | {"version": 3}))
    with pytest.raises(ValueError, match="unsupported store version 3 .*reads versions 1, 2"):
        TopKLogitStore(tmp_path)


def test_distill_refuses_a_store_without_the_tail_at_its_temperature(tmp_path):
    from llm_teach.trainers.distill import DistillConfig, build_rows

    teacher, _ = _pair(shape=(4,), vocab=64)
    ref = _v1_store(tmp_path / "logits", teacher, k=4)
    data = tmp_path / "records.jsonl"
    data.write_text(json.dumps({"prompt": "p", "logits_ref": ref}) + "\n")

    class Tok:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1, 2]}

    records = [(f"{data}:1", {"prompt": "p", "logits_ref": ref})]
    with pytest.raises(UserError, match=r"records.jsonl:1: .*no tail mass .*temperature is 2"):
        build_rows(DistillConfig(model="m", data=str(data), temperature=2.0), records, "store", Tok(), 64)
    assert build_rows(DistillConfig(model="m", data=str(data), temperature=1.0), records, "store", Tok(), 64)
    assert build_rows(DistillConfig(model="m", data=str(data), temperature=2.0, sparse_target="renormalize"),
                      records, "store", Tok(), 64)


def test_collator_and_loss_use_the_store_tail(tmp_path):
    from llm_teach.trainers.distill import DistillCollator

    teacher, student = _pair(shape=(5,), vocab=64, heavy=True)
    with open_writer(tmp_path, k=4, dtype="float32", tail_temperatures=[1.0, 2.0]) as w:
        ref = append_scored(w, "a", _scored(teacher, 4, tail_request(w)["tail"]))
    row = {"input_ids": [7, 8] + [0] * 5, "prompt_len": 2, "store": str(tmp_path), "offset": ref["offset"]}
    batch = DistillCollator(0, temperature=2.0)([row])
    assert batch["teacher_log_tail"].shape == (1, 5)
    out = DistillLoss(temperature=2.0)(student[None].float(), batch["completion_mask"], **{
        k: v for k, v in batch.items() if k.startswith("teacher_")})
    want = forward_kl(_collapse((student / 2).log_softmax(-1), batch["teacher_topk_ids"][0]),
                      _collapse((teacher / 2).log_softmax(-1), batch["teacher_topk_ids"][0])).mean()
    torch.testing.assert_close(out.kd.double(), want, rtol=1e-4, atol=1e-5)
    renorm = DistillCollator(0)([row])
    assert "teacher_log_tail" not in renorm


def test_backends_without_the_full_distribution_refuse_tails_beyond_t1(tmp_path):
    refuse_tail("vllm", None)
    refuse_tail("vllm", TailRequest((1.0,)))  # the T=1 tail comes from the top-k itself
    with pytest.raises(UserError, match=r"vllm teacher backend returns top-k log-probs at temperature 1 only"):
        refuse_tail("vllm", TailRequest((1.0, 2.0)))
    with pytest.raises(UserError, match="tail samples"):
        refuse_tail("openai", TailRequest((1.0,), samples=4, sample_temperature=1.0))
    # a served teacher's answer (top-k only) fills a T=1 store, and is refused by a T=2 one
    teacher, _ = _pair(shape=(3,), vocab=50)
    with open_writer(tmp_path / "one", k=4, tail_temperatures=[1.0]) as w:
        assert tail_request(w) == {}
        rec_ref = append_scored(w, "a", _scored(teacher, 4, None))
    tail = TopKLogitStore(tmp_path / "one").get(rec_ref).log_tail[:, 0]
    np.testing.assert_allclose(tail, tail_from_topk(teacher.log_softmax(-1).topk(4).values).numpy(), atol=1e-2)
    with open_writer(tmp_path / "two", k=4, tail_temperatures=[1.0, 2.0]) as w:
        with pytest.raises(UserError, match="no tail mass at T=2.0"):
            append_scored(w, "a", _scored(teacher, 4, None))
