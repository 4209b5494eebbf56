"""Options shared by several commands, declared once so they mean the same everywhere."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from llm_teach.backends import BackendOptions
from llm_teach.config import FieldError
from llm_teach.errors import UserError

Data = Annotated[str, typer.Option("--data", help="Problem source: gsm8k, math500, rg:TASK or a .jsonl/.parquet path.")]
Limit = Annotated[Optional[int], typer.Option("--limit", help="Use only the first N problems.")]
Columns = Annotated[Optional[str], typer.Option("--columns", help="Map a file's columns: question=COL,answer=COL[,id=COL,solution=COL].")]
Out = Annotated[str, typer.Option("--out", help="Output directory; re-running with the same one resumes.")]
Backend = Annotated[str, typer.Option("--backend", help="hf (in-process transformers), openai (any compatible server) or vllm (in-process).")]
BASE_URL_HELP = ("openai backend: server URL, e.g. http://127.0.0.1:8000/v1. Several servers (a fleet): repeat "
                 "the option or separate URLs by commas; each request goes to the least-loaded one, a failing "
                 "one is taken out for a cool-down. Never put a key in it (?api_key= is "
                 "refused; use --api-key-env); user:password@ is sent as HTTP Basic auth, only without "
                 "--api-key-env, and is masked in manifests and messages.")
API_KEY_ENV_HELP = ("openai backend: name of the environment variable holding the API key, sent as a Bearer "
                    "token (default: OPENAI_API_KEY when set and the URL has no user:password@). The key is "
                    "never recorded.")
BaseUrl = Annotated[Optional[list[str]], typer.Option("--base-url", help=BASE_URL_HELP)]
ApiKeyEnv = Annotated[Optional[str], typer.Option("--api-key-env", help=API_KEY_ENV_HELP)]
MaxConcurrency = Annotated[int, typer.Option("--max-concurrency", help="openai backend: requests in flight.")]
RequestTimeout = Annotated[float, typer.Option("--timeout", help="openai backend: seconds to wait for one response.")]
MaxRetries = Annotated[int, typer.Option("--max-retries", help="openai backend: further attempts on 429/5xx/timeouts/connection errors.")]
Tokenizer = Annotated[Optional[str], typer.Option("--tokenizer", help="openai backend, scoring: model spec of the served model's tokenizer (default: --model).")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="hf backend: sequences per forward pass.")]
TensorParallel = Annotated[int, typer.Option("--tensor-parallel-size", help="vllm backend: GPUs per model.")]
ConfigFile = Annotated[Optional[str], typer.Option("--config", help="YAML file with options for this command.")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", help="K/N: run only shard K of N (every N-th work unit of chunk_size problems, from the K-th), into "
                    "its own --out; combine the N outputs with `llm-teach merge`. Only stages whose every step is "
                    "per problem shard (ssb); stat, arte and llm2llm refuse, since they have steps over all "
                    "problems (catalog, alignment, rounds).")]
Set = Annotated[Optional[list[str]], typer.Option("--set", help="Override one option: key=value (repeatable).")]


def backend_options(backend: str, base_url: str | list[str] | None, api_key_env: str | None, max_concurrency: int,
                    dtype: str, batch_size: int, tensor_parallel_size: int, timeout: float = 600.0,
                    max_retries: int = 6, tokenizer: str | None = None, prefix: str = "--") -> BackendOptions:
    """BackendOptions from the flags; `prefix` is how they are spelled ("--", "--teacher-", ...)
    so that a refusal names the flag the user typed."""
    from llm_teach.credentials import check_auth, check_url, split_urls

    try:
        base_url = ",".join(split_urls(base_url)) or None  # a repeated option or A,B: one comma-separated value
    except ValueError as exc:
        raise UserError(f"{prefix}base-url: {exc}") from None
    if backend == "openai" and not base_url:
        raise UserError(f"{prefix}backend openai needs {prefix}base-url (e.g. http://127.0.0.1:8000/v1)")
    try:
        check_url(base_url, f"{prefix}api-key-env")
        check_auth(base_url, api_key_env, f"{prefix}api-key-env")
    except ValueError as exc:
        raise UserError(f"{prefix}base-url: {exc}") from None
    try:
        return BackendOptions(backend=backend, base_url=base_url, api_key_env=api_key_env,
                              max_concurrency=max_concurrency, dtype=dtype, batch_size=batch_size,
                              tensor_parallel_size=tensor_parallel_size, timeout=timeout,
                              max_retries=max_retries, tokenizer=tokenizer)
    except FieldError as exc:  # the flag as the user typed it, e.g. --teacher-max-concurrency
        raise UserError(f"{prefix}{exc.key.replace('_', '-')} {exc.problem}") from None


def _role_flags(role: str) -> list[inspect.Parameter]:
    """The backend flags of one model role (`--teacher-backend`, `--teacher-base-url`, ...), as
    parameters `teacher_backend`, ... of a Typer command: the names of `backend_options`."""
    p = f"--{role}-"
    flags: list[tuple[str, Any, Any]] = [
        ("backend", Annotated[str, typer.Option(p + "backend", help="hf, openai or vllm.")], "hf"),
        ("base_url", Annotated[Optional[list[str]], typer.Option(p + "base-url", help=BASE_URL_HELP.replace("--", p))],
         None),
        ("api_key_env", Annotated[Optional[str], typer.Option(p + "api-key-env",
                                                              help=API_KEY_ENV_HELP.replace("--", p))], None),
        ("max_concurrency", Annotated[int, typer.Option(p + "max-concurrency")], 8),
        ("dtype", Annotated[str, typer.Option(p + "dtype")], "auto"),
        ("batch_size", Annotated[int, typer.Option(p + "batch-size")], 16),
        ("tensor_parallel_size", Annotated[int, typer.Option(p + "tensor-parallel-size")], 1),
        ("timeout", Annotated[float, typer.Option(p + "timeout", help="openai: seconds per request.")], 600.0),
        ("max_retries", Annotated[int, typer.Option(p + "max-retries")], 6),
        ("tokenizer", Annotated[Optional[str], typer.Option(
            p + "tokenizer", help="openai scoring: model spec of the served model's tokenizer.")], None),
    ]
    return [inspect.Parameter(f"{role}_{name}", inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for name, annotation, default in flags]


def with_role_backends(*roles: str, before: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a Typer command each role's backend flags (`_role_flags`), placed before its
    parameter `before`. The command receives them in `**flags` and turns one role's into
    BackendOptions with `role_backend_options`. Typer reads a command's options from its
    signature, so the decorator sets `__signature__`: one declaration serves every role."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for param in inspect.signature(command, eval_str=True).parameters.values()
               if param.kind is not inspect.Parameter.VAR_KEYWORD]
        at = [param.name for param in own].index(before)
        added = [param for role in roles for param in _role_flags(role)]
        command.__signature__ = inspect.Signature(own[:at] + added + own[at:])  # type: ignore[attr-defined]
        return command
    return decorate


def role_backend_options(role: str, flags: dict[str, Any]) -> BackendOptions:
    """BackendOptions of `role` from the `**flags` of a command decorated by `with_role_backends`."""
    prefix = f"{role}_"
    return backend_options(**{name[len(prefix):]: value for name, value in flags.items() if name.startswith(prefix)},
                           prefix=f"--{role}-")


def parse_columns(columns: str | None) -> dict[str, str] | None:
    if not columns:
        return None
    mapping = {}
    for part in columns.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("id", "question", "answer", "solution"):
            raise UserError(f"--columns: '{part}' should be FIELD=COLUMN with FIELD in id, question, answer, solution")
        mapping[key.strip()] = value.strip()
    return mapping


def show_options(cls: type) -> None:
    """Print every key of a config dataclass with its default and help (`--show-options`)."""
    from llm_teach.config import describe

    for key, default, text in describe(cls):
        typer.echo(f"{key} = {default!r}\n    {text}")
