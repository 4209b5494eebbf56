"""Top-k teacher log-probs on disk: append-only raw arrays + a JSONL index, read by memmap.

A distill record's `logits_ref` points here. Layout of a store directory::

    meta.json            {"format", "version", "k", "dtype", "vocab_size", "model",
                          "tail_temperatures", "samples", "sample_temperature"}
    tokens.bin           int32   [N]        completion token ids, all records back to back
    token_logprobs.bin   float32 [N]        teacher log-prob of each actual token
    ids.bin              int32   [N, K+M]   teacher top-k token ids per position, then M tail samples
    logprobs.bin         dtype   [N, K+M]   their T=1 log-probs (float16 by default)
    log_tail.bin         float32 [N, nT]    log teacher mass outside the top-k at each tail temperature
    index.jsonl          {"key", "offset", "length"} per record; offset/length in tokens

Version 2 keeps the teacher's tail (`data/sparse_targets.py` says why and how): `log_tail` at
each of `tail_temperatures` (the loss temperature must be one of them; the T=1 tail can also be
derived from the top-k itself) and, with `samples` M > 0, M tokens drawn with replacement
from the tail at `sample_temperature`. Version 1 stores (top-k only, no tail fields) stay
readable: they read as a store with no tail temperatures and no samples.

All arrays are raw little-endian, so numpy (or anything else) reads them without this code,
and there is no pickle anywhere. A record's rows are written to every data file and flushed
BEFORE its index line, so a crash at any moment leaves at worst unindexed bytes at the end of
the data files or a partial last index line. Reopening a writer drops both (data files are
truncated to the end of the last indexed record), so resuming after SIGKILL never
duplicates and never points at missing data. Readers only trust the index, so they can open a
store while a writer is appending.

Flushing hands the bytes to the OS, which is enough for a killed process; pass `fsync=True`
to survive power loss too (one fsync per data file per record).

`open_writer` + `append_scored` (in `store_scoring`, re-exported here) store a teacher backend's
`score(..., top_k=k)` results (what the SSB stage and distillation from a served teacher both do).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
from filelock import FileLock, Timeout

from llm_teach.errors import UserError

FORMAT = "llm-teach-topk-logits"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_LOGPROB_DTYPES = {"float16": "<f2", "float32": "<f4"}
_FIXED = {"tokens": "<i4", "token_logprobs": "<f4", "ids": "<i4"}  # logprobs: from meta
_TAIL_DTYPE = "<f4"
# The SSB store's default layout, chosen by benchmarks/logit_store.py (issue 11; RESULTS.md).
DEFAULT_TOP_K = 16
DEFAULT_TAIL_SAMPLES = 14
# Fills top-k rows a server returned short (finite: float16-safe, exp() == 0).
PAD_LOGPROB = -1e4  # == sparse_targets.PAD_LOGPROB (not imported: this module needs no torch)


class TopKRecord(NamedTuple):
    """One record's arrays, `T` = number of completion tokens."""

    token_ids: Any  # [T] int32
    topk_ids: Any  # [T, K] int32
    topk_logprobs: Any  # [T, K] float16/float32
    token_logprobs: Any  # [T] float32
    log_tail: Any = None  # [T, nT] float32, one column per store.tail_temperatures (None: v1 / no tail)


def _dtypes(meta: dict) -> dict[str, np.dtype]:
    dtypes = {n: np.dtype(d) for n, d in _FIXED.items()}
    dtypes["logprobs"] = np.dtype(_LOGPROB_DTYPES[meta["dtype"]])
    if meta.get("tail_temperatures"):
        dtypes["log_tail"] = np.dtype(_TAIL_DTYPE)
    return dtypes


def _widths(meta: dict) -> dict[str, int]:
    """Values per token in each data file."""
    entries = meta["k"] + meta.get("samples", 0)
    width = {"ids": entries, "logprobs": entries, "log_tail": len(meta.get("tail_temperatures") or ())}
    return {n: width.get(n, 1) for n in _dtypes(meta)}


def _row_bytes(meta: dict) -> dict[str, int]:
    """Bytes per token in each data file."""
    dt = _dtypes(meta)
    return {n: dt[n].itemsize * w for n, w in _widths(meta).items()}


def _read_index(path: Path) -> tuple[list[dict], int]:
    """Valid index entries and the byte length they span.

    Only a crash tail may be invalid (a last line without its newline, or garbage after the last
    good line); a bad line followed by a good one is corruption, not a crash, and raises.
    """
    if not path.exists():
        return [], 0
    entries: list[dict] = []
    good = 0
    bad: bytes | None = None
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            entry = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            entry = None
        if entry is None:  # unfinished or unparseable: fine only as the crash tail
            bad = bad if bad is not None else line
            continue
        expected = entries[-1]["offset"] + entries[-1]["length"] if entries else 0
        if bad is not None or not isinstance(entry, dict) or entry.get("offset") != expected:
            raise ValueError(f"{path}: corrupt index near {(bad or line)[:200]!r}")
        entries.append(entry)
        good += len(line)
    return entries, good


def _read_meta(root: Path) -> dict:
    meta = json.loads((root / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{root} is not a top-k logit store (format {meta.get('format')!r})")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{root}: unsupported store version {meta.get('version')} (this llm-teach reads "
                         f"versions {', '.join(map(str, READABLE_VERSIONS))}; upgrade it)")
    return {"tail_temperatures": [], "samples": 0, "sample_temperature": None} | meta  # v1: no tail


class TopKLogitWriter:
    """Append teacher top-k log-probs to a store; reopening an existing store resumes it.

    Args:
        root: store directory (created if missing).
        k: top-k width; must match an existing store.
        dtype: "float16" (half the disk; ~1e-3 relative error on log-probs, negligible after
            exp) or "float32". Fixed at creation.
        vocab_size, model: recorded in meta.json for the reader; a mismatch with an existing
            store is an error (mixing teachers in one store is almost surely a bug).
        fsync: fsync the data files before each index line (power-loss safety).
        tail_temperatures: temperatures at which each position's log tail mass is stored
            (empty: none, the v1 layout). A loss at temperature T needs T among them.
        samples: tail tokens sampled per position (stored after the top-k), 0 = none.
        sample_temperature: the temperature they were drawn at (one of tail_temperatures).

    One writer per store at a time (a lock file enforces it).

    Example:
        >>> with TopKLogitWriter("runs/x/logits", k=8, model="teacher") as w:
        ...     ref = w.append("gsm8k-1/0", tokens, topk_ids, topk_logprobs, token_logprobs)
        >>> ref
        {'store': 'runs/x/logits', 'key': 'gsm8k-1/0', 'offset': 0, 'length': 57}
    """

    def __init__(
        self,
        root: str | os.PathLike,
        k: int,
        dtype: str = "float16",
        vocab_size: int | None = None,
        model: str | None = None,
        fsync: bool = False,
        tail_temperatures: tuple[float, ...] | list[float] = (),
        samples: int = 0,
        sample_temperature: float | None = None,
    ) -> None:
        if dtype not in _LOGPROB_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_LOGPROB_DTYPES)}, got {dtype!r}")
        tail = {"tail_temperatures": [float(t) for t in tail_temperatures], "samples": int(samples),
                "sample_temperature": None if sample_temperature is None else float(sample_temperature)}
        if samples and tail["sample_temperature"] not in tail["tail_temperatures"]:
            raise ValueError(f"tail samples need sample_temperature among tail_temperatures {tail_temperatures}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = FileLock(str(self.root / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RuntimeError(f"another writer has {self.root} open") from None
        try:
            self.meta = self._init_meta(k, dtype, vocab_size, model, tail)
            self._rows = _row_bytes(self.meta)
            self._recover()
            self._files = {n: open(self.root / f"{n}.bin", "ab") for n in self._rows}
            self._index = open(self.root / "index.jsonl", "ab")
        except BaseException:
            self._lock.release()
            raise

    def _init_meta(self, k: int, dtype: str, vocab_size: int | None, model: str | None, tail: dict) -> dict:
        path = self.root / "meta.json"
        if path.exists():  # resume: a v1 store stays v1 (and can only take more v1 records)
            meta = _read_meta(self.root)
            for name, value in tail.items():
                if meta[name] != value:
                    raise ValueError(f"{self.root}: store (version {meta['version']}) has {name}={meta[name]!r}, "
                                     f"writer asked for {value!r}")
            asked = {"k": k, "dtype": dtype, "vocab_size": vocab_size, "model": model}
            for name, value in asked.items():
                if value is not None and meta.get(name) not in (None, value):
                    raise ValueError(
                        f"{self.root}: store has {name}={meta[name]!r}, writer asked for {value!r}"
                    )
                if value is not None:
                    meta[name] = value
        else:
            meta = {"format": FORMAT, "version": VERSION, "k": k, "dtype": dtype}
            meta |= {"vocab_size": vocab_size, "model": model} | tail
        if path.exists() and json.loads(path.read_text()) == meta:
            return meta  # a resumed store keeps its bytes (a re-run of a finished stage is a no-op)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, path)
        return meta

    def _recover(self) -> None:
        """Cut the index to its last complete line and the data files to the indexed end."""
        index_path = self.root / "index.jsonl"
        entries, good_bytes = _read_index(index_path)
        if index_path.exists() and index_path.stat().st_size != good_bytes:
            os.truncate(index_path, good_bytes)
        self._entries = {e["key"]: e for e in entries}
        self._end = entries[-1]["offset"] + entries[-1]["length"] if entries else 0
        for name, row in self._rows.items():
            path = self.root / f"{name}.bin"
            size = path.stat().st_size if path.exists() else 0
            if size < self._end * row:
                raise RuntimeError(
                    f"{path} has {size} bytes but the index needs {self._end * row}: data lost "
                    "(power loss without fsync=True?)"
                )
            if size > self._end * row:
                os.truncate(path, self._end * row)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def ref(self, key: str) -> dict:
        """The ref of a record already in the store (as `append` returned it)."""
        return {"store": str(self.root), **self._entries[key]}

    def append(
        self,
        key: str,
        token_ids: Any,
        topk_ids: Any,
        topk_logprobs: Any,
        token_logprobs: Any,
        log_tail: Any = None,
    ) -> dict:
        """Store one record and return its ref (what goes into the distill record's `logits_ref`).

        Args:
            key: unique record key (e.g. "<problem_id>/<sample>"); duplicates are an error, so
                a resuming caller checks `key in writer` first.
            token_ids: [T] completion token ids.
            topk_ids: [T, K + M] teacher top-k ids at each completion position (then the M
                tail samples of a store with `samples`).
            topk_logprobs: [T, K + M] their teacher log-probs at T=1.
            token_logprobs: [T] teacher log-prob of the actual completion token.
            log_tail: [T, nT] log tail mass at each of the store's tail temperatures (required
                when the store has any, else must be None).
            (lists, numpy arrays or CPU tensors)

        Returns:
            `{"store": str(root), "key": key, "offset": first token row, "length": T}`.
        """
        if key in self._entries:
            raise KeyError(f"record {key!r} is already in {self.root}")
        dt, widths = _dtypes(self.meta), _widths(self.meta)
        given = {"tokens": token_ids, "token_logprobs": token_logprobs, "ids": topk_ids,
                 "logprobs": topk_logprobs, "log_tail": log_tail}
        if (log_tail is None) != ("log_tail" not in dt):
            raise ValueError(f"this store has tail temperatures {self.meta['tail_temperatures']}: log_tail "
                             f"must be {'given' if 'log_tail' in dt else 'None'}")
        arrays = {n: np.asarray(given[n], dtype=dt[n]) for n in dt}
        t = arrays["tokens"].size
        arrays["tokens"], arrays["token_logprobs"] = arrays["tokens"].reshape(-1), arrays["token_logprobs"].reshape(-1)
        for name, width in widths.items():
            want = (t,) if name in ("tokens", "token_logprobs") else (t, width)
            if arrays[name].shape != want:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {want}")
        for name, f in self._files.items():
            f.write(np.ascontiguousarray(arrays[name]).tobytes())
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        entry = {"key": key, "offset": self._end, "length": t}
        # One write of one complete line: a crash leaves either nothing or a partial line
        # without "\n", which recovery drops.
        self._index.write((json.dumps(entry) + "\n").encode())
        self._index.flush()
        if self.fsync:
            os.fsync(self._index.fileno())
        self._entries[key] = entry
        self._end += t
        return {"store": str(self.root), **entry}

    def close(self) -> None:
        for f in (*self._files.values(), self._index):
            f.close()
        self._lock.release()

    def __enter__(self) -> TopKLogitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TopKLogitStore:
    """Read-only view of a store: arrays are `np.memmap` slices, so nothing is loaded until used.

    The index is read once at open time; records appended later need a new store object.

    Example:
        >>> store = TopKLogitStore("runs/x/logits")
        >>> rec = store.get(record["logits_ref"])          # or store.get("gsm8k-1/0")
        >>> rec.topk_ids.shape, rec.topk_logprobs.dtype
        ((57, 8), dtype('float16'))
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.meta = _read_meta(self.root)
        self.k: int = self.meta["k"]  # exact top-k entries; then `samples` tail samples
        self.samples: int = self.meta["samples"]
        self.tail_temperatures: list[float] = self.meta["tail_temperatures"]
        self.sample_temperature: float | None = self.meta["sample_temperature"]
        entries, _ = _read_index(self.root / "index.jsonl")
        self._entries = {e["key"]: e for e in entries}
        self._end = entries[-1]["offset"] + entries[-1]["length"] if entries else 0
        self._arrays = {}
        widths = _widths(self.meta)
        for name, dtype in _dtypes(self.meta).items():
            shape = (self._end,) if name in ("tokens", "token_logprobs") else (self._end, widths[name])
            if self._end == 0:  # mmap cannot map zero bytes
                self._arrays[name] = np.zeros(shape, dtype)
            else:
                path = self.root / f"{name}.bin"
                self._arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, key_or_ref: str | dict, as_torch: bool = False) -> TopKRecord:
        """Arrays of one record, by key or by a ref returned from `TopKLogitWriter.append`.

        Returns numpy memmap views (zero-copy, read-only) or, with `as_torch=True`, tensors
        (token ids and top-k ids as int64, ready for `gather`; log-probs keep their dtype).
        """
        if isinstance(key_or_ref, dict):
            offset, length = key_or_ref["offset"], key_or_ref["length"]
            entry = self._entries.get(key_or_ref.get("key", ""))
            if entry is not None and (entry["offset"], entry["length"]) != (offset, length):
                raise ValueError(f"ref {key_or_ref} does not match the index entry {entry}")
            if offset < 0 or offset + length > self._end:
                raise KeyError(f"ref {key_or_ref} is outside {self.root} ({self._end} tokens)")
        else:
            entry = self._entries[key_or_ref]
            offset, length = entry["offset"], entry["length"]
        sl = slice(offset, offset + length)
        a = self._arrays
        tail = a["log_tail"][sl] if "log_tail" in a else None
        rec = TopKRecord(a["tokens"][sl], a["ids"][sl], a["logprobs"][sl], a["token_logprobs"][sl], tail)
        if not as_torch:
            return rec
        import torch

        return TopKRecord(
            torch.from_numpy(np.array(rec.token_ids, dtype=np.int64)),
            torch.from_numpy(np.array(rec.topk_ids, dtype=np.int64)),
            torch.from_numpy(np.array(rec.topk_logprobs)),
            torch.from_numpy(np.array(rec.token_logprobs)),
            None if tail is None else torch.from_numpy(np.array(tail)),
        )


def __getattr__(name: str) -> Any:
    """`append_scored`, `open_writer`, `tail_request` live in `store_scoring` (which needs the
    writer above); they are served from here lazily, so callers import one module and neither
    import order makes a cycle."""
    if name in ("append_scored", "open_writer", "tail_request"):
        from llm_teach.data import store_scoring

        return getattr(store_scoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
