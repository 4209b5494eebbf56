"""A stage's output directory: resumable work units, counts, token usage and the manifest.

Why work units: a stage is many model calls over a list of items (problems, candidates).
Splitting the list into units of FIXED composition (always the same items, computed from the
whole input, never from "what is left to do") and seeding each unit from its own key makes a
unit's result a pure function of its inputs. A run killed at any point and re-run therefore
redoes at most the unit it was in, gets exactly the records an uninterrupted run would have,
and never writes a record twice.

Layout of OUT (all plain files)::

    manifest.json            kind (generate:<stage>), data (source, count, content hash of the
                             problems), stage, config, models, prompt hashes, seeds, counts,
                             usage, status
    work/<step>.jsonl(.part) one line per finished unit: {"id", "records", "counts", "usage"};
                             `.part` while the step runs, renamed when it is complete
    <outputs>                the stage's final files, written atomically by `finish`

How a stage uses it (the whole contract)::

    run = StageRun(out, "ssb", config, models, templates=["ssb/rollout.jinja", ...],
                   inputs={"problems": len(problems)}, problems=problems)
    model = run.backend(models.teacher_backend, "teacher")        # counts tokens
    results = run.map("explain", problems, config.chunk_size, work)  # work(unit) -> Work
    records = [r for w in results for r in w.records.get("distill", [])]
    run.finish({"records.jsonl": records}, summary={...})

`work(unit)` gets a `Unit` (`.items`, `.seed`, `.key`) and returns `Work(records={name:
[...]}, counts=Counter(...))`. It must be deterministic given the unit: use `unit.seed` for
sampling, and read state only from earlier steps' results, never from the clock or from
what a previous crashed run left behind. A step that is one indivisible piece of work (train
a model, propose a skill list) is `run.once(step, work, depends_on=inputs)`.

Counts use "/" to group: `rejected/no_wrong_rollout`, `decontamination/dropped`. They are
summed over units into `manifest.json["counts"]`, as is token usage per role.

Built from the pieces every run directory shares: `RunDirectory` (the run's identity, the
refusal of another run's OUT, the manifest) and `work_once` (keyed once-only work on a
crash-safe log); evaluation uses the same two.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from llm_teach.config import option
from llm_teach.data.jsonl import RecordLog, write_jsonl_atomic
from llm_teach.errors import UserError
from llm_teach.prompts import template_hash
from llm_teach.runs.directory import RunDirectory
from llm_teach.runs.hashing import content_hash, data_fingerprint, derive_seed
from llm_teach.runs.shard import Shard
from llm_teach.runs.usage import Metered, Usage, UsageMeter
from llm_teach.runs.worklog import work_once

if TYPE_CHECKING:
    from llm_teach.backends import Backend


def chunk_size_option(items: str) -> Any:
    """The `chunk_size` field every stage config declares: how many `items` make one unit of
    `StageRun.map` (checked by `StageRun` before anything is written)."""
    return option(f"{items} per work unit (the most a killed run redoes).", 8)


def seed_option(derived: str) -> Any:
    """The `seed` field every stage config declares: the base seed `StageRun` derives each
    unit's seed from (`derive_seed`)."""
    return option(f"Base seed; {derived} derive theirs from it.", 0)


class DescribesModels(Protocol):
    """What a stage run needs of the stage's models (`llm_teach.stages.roles.Models`): their
    description for the manifest."""

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Unit:
    """A fixed slice of a step's items. `key` names it in the work log; `seed` is derived from
    the stage seed and the key, so the same unit always samples the same way."""

    step: str
    index: int
    items: tuple[Any, ...]
    key: str
    seed: int


@dataclass
class Work:
    """What one unit produced: records per output name, counters, and (filled in by the run)
    the token usage of the unit's model calls."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_entry(self, key: str) -> dict[str, Any]:
        return {"id": key, "records": self.records, "counts": dict(self.counts), "usage": self.usage}

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> "Work":
        return cls(records=entry["records"], counts=Counter(entry["counts"]), usage=entry["usage"])


def records(works: Sequence[Work], name: str) -> list[dict[str, Any]]:
    """All units' records of output `name`, in unit order."""
    return [r for w in works for r in w.records.get(name, [])]


class StageRun:
    """One stage's run directory. Creating it checks the config's chunk size and that OUT holds
    no other kind of run, nor a run of this stage with another config, models, prompts or
    problems (resuming those would mix two experiments in one output); nothing is written
    before those checks pass."""

    def __init__(self, out: str | Path, stage: str, config: Any, models: DescribesModels,
                 templates: Sequence[str] = (), inputs: dict[str, Any] | None = None, seed: int | None = None,
                 problems: Sequence[Any] | None = None, shard: Shard | None = None):
        self.out = Path(out)
        self.shard = shard
        self.stage = stage
        self.seed = seed if seed is not None else int(getattr(config, "seed", 0))
        self.meter = UsageMeter()
        self.started = time.time()
        if getattr(config, "chunk_size", 1) < 1:  # before the first byte: a failed start leaves nothing
            raise UserError(f"{stage}: chunk_size must be at least 1 (got {config.chunk_size})")
        self.fingerprint = {
            "stage": stage,
            "config": asdict(config) if is_dataclass(config) else dict(config),
            "models": models.describe(),
            "prompts": {name: template_hash(name) for name in templates},
            **({"shard": shard.record()} if shard else {}),  # a shard never resumes as another
        }
        self.inputs = dict(inputs or {})
        self._results: dict[str, list[Work]] = {}
        data = data_fingerprint(problems) if problems is not None else None
        self.directory = RunDirectory(self.out, f"generate:{stage}", self.fingerprint, data=data)
        self.directory.claim()
        self._write_manifest("running")

    # -- model calls --------------------------------------------------------------------------
    def backend(self, make: Callable[[], Backend], role: str) -> Metered:
        """The backend `make()` returns, made on first use, with its calls counted in this run's
        usage under `role` (e.g. `run.backend(models.teacher_backend, "teacher")`)."""
        return self.meter.wrap(make, role)

    # -- work ---------------------------------------------------------------------------------
    def units(self, step: str, items: Sequence[Any], size: int, key: Callable[[Any], str] = None) -> list[Unit]:
        """Split `items` into units of `size` in order. A unit's key hashes its items' keys, so
        a changed input (e.g. the problems an earlier round generated) is redone, not reused."""
        if size < 1:
            raise UserError(f"{self.stage}: chunk_size must be at least 1 (got {size})")
        key = key or _item_key
        units = []
        for index, start in enumerate(range(0, len(items), size)):
            chunk = tuple(items[start:start + size])
            digest = hashlib.sha256(json.dumps([key(x) for x in chunk]).encode()).hexdigest()[:10]
            unit_key = f"{step}/{index:05d}-{digest}"
            units.append(Unit(step, index, chunk, unit_key, derive_seed(self.seed, unit_key)))
        return units

    def map(self, step: str, items: Sequence[Any], size: int, work: Callable[[Unit], Work],
            key: Callable[[Any], str] = None) -> list[Work]:
        """Run `work` over fixed units of `items`, skipping units finished by an earlier run.
        Returns every unit's `Work` in order (earlier runs' results read back from disk). A
        sharded run (`--shard K/N`) runs only its own units (`Shard.takes`) and returns theirs."""
        units = self.units(step, items, size, key)
        if self.shard is not None:
            units = [u for u in units if self.shard.takes(u.index)]
        return self.run_units(step, units, work)

    def once(self, step: str, work: Callable[[Unit], Work], depends_on: Any = None) -> Work:
        """A step that is one indivisible piece of work (train a model, propose a skill list,
        merge earlier results), cached like a unit. Its key hashes `depends_on` -- the inputs
        it is computed from -- so a re-run over changed inputs (a larger --limit, another data
        file, a different model from an earlier step) redoes it instead of reusing a stale result."""
        if self.shard is not None:  # `run_stage` refuses --shard for stages with such steps
            raise RuntimeError(f"{self.stage}: step '{step}' runs once over all items and cannot be sharded")
        return self.run_units(step, self.units(step, [content_hash(depends_on)], 1, key=str), work)[0]

    def run_units(self, step: str, units: list[Unit], work: Callable[[Unit], Work]) -> list[Work]:
        """Run `work` over `units` not finished by an earlier run (`work/<step>.jsonl` holds one
        entry per finished unit); return every unit's `Work` in order, read back from the log,
        so a resumed run returns exactly what an uninterrupted one would."""

        def run_unit(todo: list[Unit]) -> list[dict[str, Any]]:
            (unit,) = todo
            self.meter.usage = Usage()
            result = work(unit)
            result.usage = self.meter.usage.to_dict()
            return [result.to_entry(unit.key)]

        entries = work_once(RecordLog(self.out / "work" / f"{step}.jsonl"), [[u] for u in units],
                            key=lambda u: u.key, work=run_unit, description=f"{self.stage} {step}")
        results = [Work.from_entry(entry) for entry in entries]
        self._results[step] = results
        return results

    # -- results ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        total: Counter = Counter()
        for works in self._results.values():
            for w in works:
                total.update(w.counts)
        return dict(sorted(total.items()))

    def usage(self) -> dict[str, dict[str, int]]:
        return Usage.total([w.usage for works in self._results.values() for w in works])

    def finish(self, outputs: dict[str, list[dict[str, Any]]], primary: str | None = None,
               **sections: Any) -> dict[str, Any]:
        """Write each output file atomically, the dataset card (README.md, with `primary` -- the
        records a trainer reads, default the first output -- as the default data), then the
        manifest with status "complete". `sections` (e.g. `summary=...`) go to the manifest."""
        from llm_teach.runs.cards import write_dataset_card

        for name, records in outputs.items():
            write_jsonl_atomic(self.out / name, records)
        counts = {**self.counts(), **{f"records/{name}": len(r) for name, r in outputs.items()}}
        data = self.directory.data.record() if self.directory.data is not None else {}
        write_dataset_card(self.out, self.stage, self.fingerprint["models"], outputs, primary or next(iter(outputs)),
                           data.get("source"), counts, sections.get("decontamination"))
        return self._write_manifest("complete", counts=counts, outputs=sorted(outputs), **sections)

    # -- manifest -----------------------------------------------------------------------------
    def _write_manifest(self, status: str, **extra: Any) -> dict[str, Any]:
        return self.directory.write_manifest(status=status, **self.fingerprint, seed=self.seed, inputs=self.inputs,
                                             usage=self.usage(),
                                             timings={"seconds_this_run": round(time.time() - self.started, 2)},
                                             **({"backend_stats": self.meter.backend_stats}
                                                if self.meter.backend_stats else {}),
                                             **extra)


def _item_key(item: Any) -> str:
    if hasattr(item, "id"):
        return str(item.id)
    if isinstance(item, dict) and "id" in item:
        return str(item["id"])
    return json.dumps(item, sort_keys=True, default=str)
