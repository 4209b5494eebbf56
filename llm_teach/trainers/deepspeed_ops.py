"""Keep DeepSpeed from compiling a C++ kernel that training never calls.

On a CPU (`DS_ACCELERATOR=cpu`), DeepSpeed's torch communication backend JIT-compiles its
shared-memory all-reduce kernel (`deepspeed_shm_comm`) every time a process group starts: about
a minute of g++ on two cores, cached in ~/.cache/torch_extensions but rebuilt whenever another
Python environment built it there last (the cache is keyed by name, not by environment). Only
`inference_all_reduce` (DeepSpeed's tensor-parallel inference) uses that kernel; ZeRO training
reduces through torch.distributed (gloo on CPU), so for `llm-teach train` the compile is pure
start-up cost. DeepSpeed has no option for this: it builds every op its probe marks compatible,
and keeps the probe's answer in one module-level dict (`deepspeed.ops.__compatible_ops__`) whose
edits persist, so marking the op incompatible there is the one switch it offers.
"""

from __future__ import annotations

import os

SHM_OP = "deepspeed_shm_comm"


def skip_inference_comm_op(deepspeed_config: str | None = None) -> bool:
    """Under DeepSpeed (an accelerate DeepSpeed launch, or `deepspeed_config` given), mark the
    inference-only shared-memory kernel as unavailable before the process group starts.
    Returns whether it did (False: not a DeepSpeed run)."""
    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    if not (launched or deepspeed_config):
        return False
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_OP] = False
    return True
