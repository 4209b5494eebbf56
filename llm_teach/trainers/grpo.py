"""GRPO with TRL's GRPOTrainer; the reward is answer correctness from `llm_teach.grading`.

Problems come from any Problem source. Each becomes a dataset row with the evaluation chat
prompt plus the columns the reward needs (`answer`, `benchmark`, `meta` as JSON text, since
reasoning-gym metadata has no fixed Arrow schema); TRL passes those columns to the reward
functions next to the completions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llm_teach.config import check_fields, option
from llm_teach.trainers.model_loading import load_student
from llm_teach.trainers.records import load_training_problems, problem_prompt
from llm_teach.trainers.train_config import TrainConfig, lora_config, make_args, trl_kwargs


@dataclass
class GRPOConfig(TrainConfig):
    """GRPO on Problems with a correctness reward (+ optional format reward)."""

    learning_rate: float = option("Peak learning rate (AdamW).", 1e-6)
    num_generations: int = option("Completions sampled per prompt (the GRPO group size). "
                                 "per_device_train_batch_size x processes must be a multiple of it.", 4)
    max_completion_length: int = option("Maximum new tokens per completion.", 256)
    temperature: float = option("Sampling temperature of the rollouts.", 1.0)
    top_p: float = option("Nucleus sampling of the rollouts.", 1.0)
    beta: float = option("Coefficient of GRPO's own KL to the reference model (0 = no reference model).", 0.0)
    loss_type: str = option("TRL GRPO loss aggregation: dapo, grpo, dr_grpo, bnpo, ...", "dapo")
    epsilon: float = option("PPO-style clipping range of the importance ratio.", 0.2)
    scale_rewards: str = option("Advantage normalization: group, batch or none.", "group")
    num_iterations: int = option("Optimization passes per generated batch (mu in the GRPO paper).", 1)
    steps_per_generation: int | None = option(
        "Micro-batches one generation is split into (TRL's steps_per_generation; None = gradient_accumulation_steps). "
        "More than gradient_accumulation_steps: one generation feeds several optimizer steps, later ones off-policy "
        "(importance-weighted).")
    mask_truncated_completions: bool = option("Exclude completions that hit max_completion_length from the loss.",
                                             False)
    format_reward: float = option("Weight of a format reward (1 if the completion has a \\boxed{} answer); "
                                 "0 disables it.", 0.0)
    # Student rollouts through vLLM: passed to TRL's GRPOConfig unchanged (TRL syncs the weights
    # into vLLM after every optimizer step). See VLLM_ROLLOUT_FIELDS for what is verified where.
    use_vllm: bool = option("Generate the student's rollouts with vLLM instead of transformers' generate "
                            "(TRL's use_vllm; needs a vLLM that TRL supports. Verified on CPU only up to TRL's config: see the "
                            "README, 'Student rollouts on vLLM').", False)
    vllm_mode: Literal["colocate", "server"] = option(
        "colocate: a vLLM engine inside each training process, weights copied in after every step; server: "
        "send prompts to `trl vllm-serve --model MODEL` (weights pushed to it over NCCL: CUDA only).", "colocate")
    vllm_server_base_url: str | None = option("server mode: base URL of `trl vllm-serve`, e.g. "
                                             "http://127.0.0.1:8000 (overrides host and port).")
    vllm_server_host: str = option("server mode: host of `trl vllm-serve` (when no base URL).", "0.0.0.0")
    vllm_server_port: int = option("server mode: port of `trl vllm-serve` (when no base URL).", 8000)
    vllm_server_timeout: float = option("server mode: seconds to wait for the server to come up.", 240.0)
    vllm_group_port: int = option("server mode: port of the weight-update process group.", 51216)
    vllm_gpu_memory_utilization: float = option("colocate mode: fraction of GPU memory the vLLM engine may take.",
                                               0.3)
    vllm_tensor_parallel_size: int = option("colocate mode: GPUs per vLLM engine.", 1)
    vllm_max_model_length: int | None = option("vLLM context window (prompt + max_completion_length); default: "
                                              "the model's.")
    vllm_enable_sleep_mode: bool = option("colocate mode: offload vLLM's weights and cache during the optimizer "
                                          "step (less GPU memory, slower wake-up).", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # num_generations >= 2: GRPO compares completions within a group.
        check_fields(self, num_generations=">= 2", max_completion_length=">= 1", temperature="> 0", top_p="(0, 1]",
                           beta=">= 0", epsilon="> 0", num_iterations=">= 1", steps_per_generation=">= 1",
                           format_reward=">= 0",
                           vllm_server_port="[1, 65535]",
                           vllm_group_port="[1, 65535]", vllm_server_timeout="> 0",
                           vllm_gpu_memory_utilization="(0, 1]", vllm_tensor_parallel_size=">= 1",
                           vllm_max_model_length=">= 1")


# The GRPOConfig fields handed to TRL as they are (TRL's own names, so its docs apply).
VLLM_ROLLOUT_FIELDS = ("use_vllm", "vllm_mode", "vllm_server_base_url", "vllm_server_host", "vllm_server_port",
                       "vllm_server_timeout", "vllm_group_port", "vllm_gpu_memory_utilization",
                       "vllm_tensor_parallel_size", "vllm_max_model_length", "vllm_enable_sleep_mode")


def vllm_kwargs(cfg: GRPOConfig) -> dict[str, Any]:
    """TRL's vLLM rollout options; nothing when use_vllm is off, so a run without vLLM gives TRL
    exactly the arguments it got before these options existed."""
    if not cfg.use_vllm:
        return {}
    return {name: getattr(cfg, name) for name in VLLM_ROLLOUT_FIELDS}


def completion_text(completion: Any) -> str:
    """TRL hands conversational completions as `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def correctness(completions: list, answer: list[str], benchmark: list[str], meta: list[str], **_) -> list[float]:
    """1.0 when the completion's final answer grades correct against the gold answer, else 0.0."""
    from llm_teach.grading import is_correct

    return [float(is_correct(completion_text(c), a, b, json.loads(m)))
            for c, a, b, m in zip(completions, answer, benchmark, meta, strict=True)]


def boxed_format(completions: list, **_) -> list[float]:
    """1.0 when the completion states a final answer in \\boxed{} (what evaluation extracts)."""
    from llm_teach.grading import last_boxed

    return [float(last_boxed(completion_text(c)) is not None) for c in completions]


def reward_functions(cfg: GRPOConfig) -> tuple[list, list[float]]:
    """Reward functions and their weights. Correctness is always first: KDRL's reward-guided
    masking reads that column."""
    funcs, weights = [correctness], [1.0]
    if cfg.format_reward:
        funcs.append(boxed_format)
        weights.append(cfg.format_reward)
    return funcs, weights


def build_dataset(cfg: TrainConfig) -> list[dict[str, Any]]:
    from llm_teach.data import grading_benchmark

    return [{"prompt": problem_prompt(p.question, cfg.template), "answer": p.answer,
             "benchmark": grading_benchmark(p.source), "meta": json.dumps(p.meta), "id": p.id}
            for p in load_training_problems(cfg)]


def grpo_args(cfg: GRPOConfig, out: Path, **extra):
    import trl

    return make_args(
        trl.GRPOConfig,
        **trl_kwargs(cfg, out), num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
        beta=cfg.beta, loss_type=cfg.loss_type, epsilon=cfg.epsilon, scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations, mask_truncated_completions=cfg.mask_truncated_completions,
        **({} if cfg.steps_per_generation is None else {"steps_per_generation": cfg.steps_per_generation}),
        reward_weights=reward_functions(cfg)[1], log_completions=False, **vllm_kwargs(cfg), **extra)


def build_trainer(cfg: GRPOConfig, out: Path, callbacks=None):
    import datasets
    import trl

    from llm_teach.models import load_tokenizer

    rows = build_dataset(cfg)
    args = grpo_args(cfg, out)
    return trl.GRPOTrainer(model=load_student(cfg), reward_funcs=reward_functions(cfg)[0], args=args,
                           train_dataset=datasets.Dataset.from_list(rows),
                           processing_class=load_tokenizer(cfg.model), peft_config=lora_config(cfg),
                           callbacks=callbacks)
