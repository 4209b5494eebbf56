"""Top-k teacher log-probs on disk: append-only raw arrays + a JSONL index, read by memmap.

A distill record's `logits_ref` points here. Layout of a store directory::

    meta.json            {"format", "version", "k", "dtype", "vocab_size", "model"}
    tokens.bin           int32   [N]      completion token ids, all records back to back
    token_logprobs.bin   float32 [N]      teacher log-prob of each actual token
    ids.bin              int32   [N, K]   teacher top-k token ids per position
    logprobs.bin         dtype   [N, K]   their log-probs (float16 by default)
    index.jsonl          {"key", "offset", "length"} per record; offset/length in tokens

All arrays are raw little-endian, so numpy (or anything else) reads them without this code,
and there is no pickle anywhere. A record's rows are written to every data file and flushed
BEFORE its index line, so a crash at any moment leaves at worst unindexed bytes at the end of
the data files or a partial last index line. Reopening a writer drops both (data files are
truncated to the end of the last indexed record), so resuming after SIGKILL never
duplicates and never points at missing data. Readers only trust the index, so they can open a
store while a writer is appending.

Flushing hands the bytes to the OS, which is enough for a killed process; pass `fsync=True`
to survive power loss too (one fsync per data file per record).

`open_writer` + `append_scored` store a teacher backend's `score(..., top_k=k)` results (what
the SSB stage and distillation from a served teacher both do).
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
VERSION = 1
_LOGPROB_DTYPES = {"float16": "<f2", "float32": "<f4"}
_FIXED = {"tokens": "<i4", "token_logprobs": "<f4", "ids": "<i4"}  # logprobs: from meta
PAD_LOGPROB = -1e4  # fills top-k rows a server returned short (finite: float16-safe, exp() == 0)


class TopKRecord(NamedTuple):
    """One record's arrays, `T` = number of completion tokens."""

    token_ids: Any  # [T] int32
    topk_ids: Any  # [T, K] int32
    topk_logprobs: Any  # [T, K] float16/float32
    token_logprobs: Any  # [T] float32


def _dtypes(meta: dict) -> dict[str, np.dtype]:
    dtypes = {n: np.dtype(d) for n, d in _FIXED.items()}
    return {**dtypes, "logprobs": np.dtype(_LOGPROB_DTYPES[meta["dtype"]])}


def _row_bytes(meta: dict) -> dict[str, int]:
    """Bytes per token in each data file."""
    k, dt = meta["k"], _dtypes(meta)
    return {n: dt[n].itemsize * (k if n in ("ids", "logprobs") else 1) for n in dt}


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
    if meta.get("version") != VERSION:
        raise ValueError(f"{root}: unsupported store version {meta.get('version')}")
    return meta


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
    ) -> None:
        if dtype not in _LOGPROB_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_LOGPROB_DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = FileLock(str(self.root / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RuntimeError(f"another writer has {self.root} open") from None
        try:
            self.meta = self._init_meta(k, dtype, vocab_size, model)
            self._rows = _row_bytes(self.meta)
            self._recover()
            self._files = {n: open(self.root / f"{n}.bin", "ab") for n in self._rows}
            self._index = open(self.root / "index.jsonl", "ab")
        except BaseException:
            self._lock.release()
            raise

    def _init_meta(self, k: int, dtype: str, vocab_size: int | None, model: str | None) -> dict:
        path = self.root / "meta.json"
        if path.exists():
            meta = _read_meta(self.root)
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
            meta |= {"vocab_size": vocab_size, "model": model}
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
    ) -> dict:
        """Store one record and return its ref (what goes into the distill record's `logits_ref`).

        Args:
            key: unique record key (e.g. "<problem_id>/<sample>"); duplicates are an error, so
                a resuming caller checks `key in writer` first.
            token_ids: [T] completion token ids.
            topk_ids: [T, K] teacher top-k ids at each completion position.
            topk_logprobs: [T, K] their teacher log-probs.
            token_logprobs: [T] teacher log-prob of the actual completion token.
            (lists, numpy arrays or CPU tensors)

        Returns:
            `{"store": str(root), "key": key, "offset": first token row, "length": T}`.
        """
        if key in self._entries:
            raise KeyError(f"record {key!r} is already in {self.root}")
        dt = _dtypes(self.meta)
        k = self.meta["k"]
        arrays = {
            "tokens": np.asarray(token_ids, dtype=dt["tokens"]).reshape(-1),
            "token_logprobs": np.asarray(token_logprobs, dtype=dt["token_logprobs"]).reshape(-1),
            "ids": np.asarray(topk_ids, dtype=dt["ids"]),
            "logprobs": np.asarray(topk_logprobs, dtype=dt["logprobs"]),
        }
        t = len(arrays["tokens"])
        for name, want in (("token_logprobs", (t,)), ("ids", (t, k)), ("logprobs", (t, k))):
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


def open_writer(root: str | os.PathLike, **kwargs: Any) -> TopKLogitWriter:
    """`TopKLogitWriter(root, **kwargs)`, its refusals (another writer has the store open, a store
    written with other settings) turned into one-line UserErrors."""
    try:
        return TopKLogitWriter(root, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{root}: {exc}") from None


def append_scored(writer: TopKLogitWriter, key: str, scored: Any) -> dict:
    """Store one `Scored` result of a backend's `score(..., top_k=k)` under `key`; returns its ref.

    Each position's `{token_id: logprob}` row is sorted by log-prob and cut or padded to the
    store's k (padding: the row's last id, or 0 for an empty row, with PAD_LOGPROB). A key
    already in the store returns its existing ref and stores nothing, so a caller that redoes
    work after a crash never stores a record twice.
    """
    if key in writer:
        return writer.ref(key)
    if scored.top_k is None:
        raise UserError(f"the teacher backend returned no top-k log-probs for '{key}'; a backend whose "
                        "score() supports top_k is needed (hf, vllm, openai on vLLM)")
    k = writer.meta["k"]
    ids, logps = [], []
    for row in scored.top_k:
        pairs = sorted(row.items(), key=lambda kv: -kv[1])[:k]
        pairs += [(pairs[-1][0] if pairs else 0, PAD_LOGPROB)] * (k - len(pairs))
        ids.append([i for i, _ in pairs])
        logps.append([lp for _, lp in pairs])
    shape = (len(ids), k)  # also for an empty completion: [0, k], not [0]
    return writer.append(key, scored.token_ids, np.array(ids, dtype=np.int64).reshape(shape),
                         np.array(logps, dtype=np.float64).reshape(shape), scored.logprobs)


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
        self.k: int = self.meta["k"]
        entries, _ = _read_index(self.root / "index.jsonl")
        self._entries = {e["key"]: e for e in entries}
        self._end = entries[-1]["offset"] + entries[-1]["length"] if entries else 0
        self._arrays = {}
        for name, dtype in _dtypes(self.meta).items():
            shape = (self._end, self.k) if name in ("ids", "logprobs") else (self._end,)
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
        rec = TopKRecord(a["tokens"][sl], a["ids"][sl], a["logprobs"][sl], a["token_logprobs"][sl])
        if not as_torch:
            return rec
        import torch

        return TopKRecord(
            torch.from_numpy(np.array(rec.token_ids, dtype=np.int64)),
            torch.from_numpy(np.array(rec.topk_ids, dtype=np.int64)),
            torch.from_numpy(np.array(rec.topk_logprobs)),
            torch.from_numpy(np.array(rec.token_logprobs)),
        )
