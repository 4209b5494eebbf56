"""`llm-teach merge`: the outputs of `generate STAGE --shard K/N` (K = 1..N) as one run.

Why it works from the work logs and not from the output files: a shard ran whole work units
of the unsharded run (`runs.shard`), and its `work/<step>.jsonl` holds each unit's records
under the unit's key. Putting those entries back in unit order (one per key: a unit two
shards both hold is kept once) gives exactly the work log of the unsharded run, and the
output files are rebuilt from it the way the stage builds them (`StageEntry.outputs`), so the
merged output holds the unsharded run's ids in its order, and its contents. Teacher log-probs
are copied into one logit store per stage store (`StageEntry.stores`), in the same order, and
every `logits_ref` is rewritten to point into it.

Refused, each in one line and before anything is written: a directory that is not a finished
shard, shards of different runs (stage, config, models, prompts, seed, data: the run identity
of `runs.directory`; only the servers' URLs may differ between machines), shards of different
N, a missing shard, an OUT that already holds something. The merge is written into a
temporary sibling of OUT and renamed at the end: no half-written OUT.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from llm_teach.data.jsonl import read_jsonl, write_jsonl_atomic
from llm_teach.errors import UserError
from llm_teach.runs.directory import RunDirectory, differences, manifest_kind
from llm_teach.runs.manifest import write_manifest
from llm_teach.runs.usage import Usage

# The manifest sections that must agree between shards (the run identity, without `shard`).
IDENTITY = ("stage", "config", "models", "prompts", "seed", "data")


def merge_shards(shard_dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Merge finished shard directories into `out`; returns the merged manifest."""
    from llm_teach.stages import STAGES

    shards = [(Path(d), _read_shard(Path(d))) for d in dict.fromkeys(map(str, shard_dirs))]
    shards.sort(key=lambda s: s[1]["shard"].get("index", 0))
    first_dir, first = shards[0]
    for path, manifest in shards[1:]:
        _check_same_run(first_dir, first, path, manifest)
    stage = first["stage"]
    entry = STAGES.get(stage)
    if entry is None or entry.no_shard:
        raise UserError(f"{first_dir}: stage '{stage}' does not shard, so there is nothing to merge")
    count = first["shard"]["count"]
    have = {m["shard"]["index"] for _, m in shards}
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in have]
    if missing:
        raise UserError(f"merge needs all {count} shards: missing {', '.join(missing)}")
    out = Path(out)
    _check_out(out)
    tmp = out.parent / f".{out.name}.merging-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _write_merged(shards, entry, out, tmp)
        if out.is_dir():
            out.rmdir()  # empty (checked): the merged run takes its place
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _read_shard(path: Path) -> dict[str, Any]:
    manifest = RunDirectory(path, "", {}).previous()
    if manifest is None:
        raise UserError(f"{path}: no manifest.json; merge takes the --out directories of `generate ... --shard K/N`")
    if not manifest_kind(manifest).startswith("generate:") or not isinstance(manifest.get("shard"), dict):
        raise UserError(f"{path} is not a shard of `llm-teach generate` (no `shard` in its manifest)")
    if manifest.get("status") != "complete":
        raise UserError(f"{path}: shard {_shard_text(manifest)} has not finished (status "
                        f"{manifest.get('status')!r}); re-run its command to complete it")
    return manifest


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The sections that name the run; the servers a shard reached are not part of it (each
    machine may have its own), nor where the data file lives (its content hash is)."""
    ident = {k: manifest.get(k) for k in IDENTITY}
    ident["models"] = {role: {k: v for k, v in (m or {}).items() if k != "base_url"}
                       for role, m in (manifest.get("models") or {}).items()}
    ident["data"] = {k: v for k, v in (manifest.get("data") or {}).items() if k != "source"}
    ident["shard_count"] = manifest["shard"].get("count")
    return ident


def _check_same_run(first_dir: Path, first: dict[str, Any], path: Path, manifest: dict[str, Any]) -> None:
    a, b = _identity(first), _identity(manifest)
    for section in a:
        if a[section] != b[section]:
            shown = "; ".join(differences(a[section], b[section], section)[:2])
            raise UserError(f"{path} is a shard of another run than {first_dir} (other {section}: {shown}); "
                            f"merge only shards of one `generate` command")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; merge into a new --out")
    RunDirectory(out, "", {}).check_kind()  # e.g. a folder above OUT is a file


def _unit_index(key: str) -> int:
    """A unit key is `<step>/<index:05d>-<digest>` (`StageRun.units`)."""
    return int(key.rsplit("/", 1)[1].split("-", 1)[0])


def _merged_log(shards: list[tuple[Path, dict]], step_file: str) -> list[tuple[Path, dict[str, Any]]]:
    """(owning shard, entry) of every unit of one step, in unit order, each unit once."""
    seen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, _ in shards:
        log = path / "work" / step_file
        if not log.is_file():
            raise UserError(f"{log} is missing: {path} is not a finished shard")
        for entry in read_jsonl(log):
            seen.setdefault(entry["id"], (path, entry))
    return [seen[key] for key in sorted(seen, key=_unit_index)]


def _write_merged(shards: list[tuple[Path, dict]], entry, out: Path, tmp: Path) -> dict[str, Any]:
    steps = sorted({p.name for path, _ in shards for p in (path / "work").glob("*.jsonl")})
    stores = _StoreCopier(shards, entry.stores, out, tmp)
    outputs: dict[str, list[dict[str, Any]]] = {name: [] for name in entry.outputs}
    try:
        for step_file in steps:
            merged = _merged_log(shards, step_file)
            for path, unit in merged:
                for records in unit["records"].values():
                    for record in records:
                        stores.rewrite(path, record)
                for name, kind in entry.outputs.items():
                    outputs[name] += unit["records"].get(kind, [])
            write_jsonl_atomic(tmp / "work" / step_file, [unit for _, unit in merged])
    finally:
        stores.close()
    sizes = {}
    for name, records in outputs.items():
        sizes[name] = write_jsonl_atomic(tmp / name, _dedupe(records))
    return _write_manifest(shards, out, tmp, sizes)


def _dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per id (a unit held by two shards is already kept once; this guards ids)."""
    seen: set = set()
    kept = []
    for record in records:
        key = record.get("id")
        if key is None or key not in seen:
            kept.append(record)
            seen.add(key)
    return kept


class _StoreCopier:
    """Copies the records' teacher log-probs from each shard's store into one store, in the
    order the records are met, and points their `logits_ref` at the copy."""

    def __init__(self, shards: list[tuple[Path, dict]], names: tuple[str, ...], out: Path, tmp: Path):
        from llm_teach.data.logit_store import TopKLogitStore, TopKLogitWriter

        self.out, self.readers, self.writers = out, {}, {}
        for name in names:
            metas = [(path, TopKLogitStore(path / name)) for path, _ in shards if (path / name / "meta.json").is_file()]
            if not metas:
                continue
            for path, store in metas:
                if store.meta != metas[0][1].meta:
                    raise UserError(f"{path / name} was written with other settings than {metas[0][0] / name}")
                self.readers[(path, name)] = store
            meta = metas[0][1].meta
            self.writers[name] = TopKLogitWriter(
                tmp / name, k=meta["k"], dtype=meta["dtype"], vocab_size=meta.get("vocab_size"),
                model=meta.get("model"), tail_temperatures=meta.get("tail_temperatures", ()),
                samples=meta.get("samples", 0), sample_temperature=meta.get("sample_temperature"))

    def rewrite(self, shard: Path, record: dict[str, Any]) -> None:
        ref = record.get("logits_ref")
        if not isinstance(ref, dict):
            return
        name = Path(ref["store"]).name
        writer = self.writers.get(name)
        if writer is None or (shard, name) not in self.readers:
            raise UserError(f"{shard}: a record points into logit store '{name}', which this shard does not hold")
        key = ref["key"]
        if key not in writer:
            arrays = self.readers[(shard, name)].get(ref)
            writer.append(key, arrays.token_ids, arrays.topk_ids, arrays.topk_logprobs, arrays.token_logprobs,
                          arrays.log_tail)
        record["logits_ref"] = {**writer.ref(key), "store": str(self.out / name)}

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _write_manifest(shards: list[tuple[Path, dict]], out: Path, tmp: Path, sizes: dict[str, int]) -> dict[str, Any]:
    manifests = [m for _, m in shards]
    first = manifests[0]
    counts: dict[str, int] = {}
    for m in manifests:
        for key, value in (m.get("counts") or {}).items():
            if not key.startswith("records/"):
                counts[key] = counts.get(key, 0) + value
    counts.update({f"records/{name}": n for name, n in sizes.items()})
    return write_manifest(
        tmp, kind=manifest_kind(first), data=first.get("data"),
        **{k: first.get(k) for k in ("stage", "config", "models", "prompts")},
        status="complete", seed=first.get("seed"), inputs=first.get("inputs"),
        usage=Usage.total([m.get("usage") or {} for m in manifests]), counts=dict(sorted(counts.items())),
        outputs=sorted(sizes), summary=_summary([m.get("summary") or {} for m in manifests], shards, out),
        shards=[{"out": str(path), "shard": _shard_text(m), "counts": m.get("counts"),
                 **({"backend_stats": m["backend_stats"]} if m.get("backend_stats") else {})} for path, m in shards])


def _summary(parts: list[dict[str, Any]], shards: list[tuple[Path, dict]], out: Path) -> dict[str, Any]:
    """Counts summed; a shard's own paths become the merged run's; other values kept when all
    shards agree; `kept_fraction` recomputed from the sums."""
    summary: dict[str, Any] = {}
    for key in parts[0]:
        values = [p.get(key) for p in parts]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            summary[key] = sum(values)
        elif all(isinstance(v, str) and Path(v).resolve().parent == path.resolve()
                 for v, (path, _) in zip(values, shards)):
            summary[key] = str(out / Path(values[0]).name)
        elif all(v == values[0] for v in values):
            summary[key] = values[0]
    if "kept_fraction" in parts[0] and isinstance(summary.get("kept"), int) and summary.get("problems"):
        summary["kept_fraction"] = summary["kept"] / summary["problems"]
    return summary


def _shard_text(manifest: dict[str, Any]) -> str:
    shard = manifest.get("shard") or {}
    return f"{shard.get('index')}/{shard.get('count')}"
