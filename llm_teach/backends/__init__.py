"""Pick a backend by name. Optional engines (vllm, the HTTP client) are imported lazily,
so `--backend vllm` without vllm installed is one clear error, not an import crash."""

from __future__ import annotations

from dataclasses import dataclass

from llm_teach.config import check_fields
from llm_teach.credentials import check_auth, check_url
from llm_teach.backends.base import Backend, Generation, Prompt, SamplingConfig, TokenLogprobs, top_p_option
from llm_teach.errors import UserError

BACKENDS = ("hf", "openai", "vllm")


@dataclass
class BackendOptions:
    """How to reach a model; the CLI fills this from --backend, --base-url, ... options."""

    backend: str = "hf"  # hf (transformers in-process), openai (any compatible server), vllm (in-process)
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # openai: NAME of the environment variable holding the key
    max_concurrency: int = 8  # openai: requests in flight
    timeout: float = 600.0  # openai: seconds per request
    max_retries: int = 6  # openai: attempts after the first, on 429/5xx/timeouts
    tokenizer: str | None = None  # openai score(): model spec of the served model's tokenizer (default: the model name)
    dtype: str = "auto"  # hf/vllm weights dtype
    device: str | None = None  # hf: cpu, cuda, cuda:1 (default: cuda when available)
    batch_size: int = 16  # hf: sequences per forward pass
    tensor_parallel_size: int = 1  # vllm: GPUs per model
    gpu_memory_utilization: float = 0.85  # vllm

    def __post_init__(self) -> None:
        # One rule for credentials (llm_teach.credentials): never a key in the URL's query string,
        # and user:password@ in the URL only without a key variable.
        check_url(self.base_url, "api_key_env")
        check_auth(self.base_url, self.api_key_env, "api_key_env")
        # 0 requests in flight would hang an evaluation forever, a negative timeout fails every
        # request: refused here, where flags, YAML backend sections and Python callers all pass.
        check_fields(self, max_concurrency=">= 1", timeout="> 0", max_retries=">= 0", batch_size=">= 1",
                     tensor_parallel_size=">= 1", gpu_memory_utilization="(0, 1]")


def make_backend(model: str, options: BackendOptions | None = None) -> Backend:
    options = options or BackendOptions()
    if options.backend == "hf":
        from llm_teach.backends.hf import HFBackend, HFConfig

        return HFBackend(model, HFConfig(dtype=options.dtype, device=options.device, batch_size=options.batch_size))
    if options.backend == "openai":
        from llm_teach.backends.openai import OpenAIBackend

        return OpenAIBackend.from_options(model, options)
    if options.backend == "vllm":
        from llm_teach.backends.vllm import VLLMBackend

        return VLLMBackend.from_options(model, options)
    raise UserError(f"unknown backend '{options.backend}' (choose from {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "Backend", "BackendOptions", "Generation", "Prompt", "SamplingConfig", "top_p_option",
           "TokenLogprobs", "make_backend"]
