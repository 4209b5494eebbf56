"""Trainers built on TRL (SFT, DPO, GRPO, KDRL, distillation) and their losses."""
