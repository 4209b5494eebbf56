"""What the distill and gkd `transformers.Trainer` subclasses share: their TrainingArguments and
the way their own per-micro-step metrics reach metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from llm_teach.trainers.train_config import TrainConfig, make_args, trl_kwargs


def trainer_args(cfg: TrainConfig, out: Path):
    """`transformers.TrainingArguments` of a custom-loss trainer: the batch keeps its extra
    columns (teacher inputs, indices), which the default would drop."""
    import transformers

    return make_args(transformers.TrainingArguments, **trl_kwargs(cfg, out), remove_unused_columns=False)


class MeanMetricsLog:
    """Trainer mixin: `self._metrics` (name -> values appended by `compute_loss`/`training_step`)
    is averaged into every log and cleared, so each metrics.jsonl row holds the mean over the
    micro-steps since the last one."""

    _metrics: dict[str, list[float]]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for key, values in self._metrics.items():
            if values:
                logs[key] = sum(values) / len(values)
            values.clear()
        super().log(logs, start_time)
