"""Losses of the trainers, in two families; small functions and `nn.Module`s with shapes in
their docstrings, tested against dense references (tests/unit/test_losses.py).

* `distill`: logit distillation (SSB, sequence KD, GKD-style): the divergence against
  full-vocabulary teacher logits or the teacher's stored top-k, `DistillLoss`, and
  `ChunkedDistillLoss`, which reuses it chunk by chunk from hidden states so `[B, T, V]`
  logits never exist for the whole batch. Built on `divergences` (forward KL, reverse KL,
  generalized JSD over a common support).
* `tiled`: `TiledDistillLoss`, what the distill trainer uses: `DistillLoss` over tiles of the
  batch's flattened valid rows, with the student's AND an online teacher's logits projected
  per tile from their hidden states and lm-heads (peak memory independent of the batch).
* `kdrl`: KDRL (GRPO + reverse KL to a teacher on the student's own samples): the k1/k2/k3
  estimators, their masked mean, the beta schedule and reward-guided masking.
"""
