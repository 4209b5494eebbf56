"""JSONL in and out: strict reading with file:line errors, atomic writes, crash-safe appends.

Every arrow of the pipeline is a file a human can open, so these few functions carry the
project's durability promise: a reader names the exact line that is broken, a finished output
appears all at once (temp file + rename), and a long run appends one record per `write` so a
SIGKILL costs at most the record being written, which the next run drops and redoes.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator

from llm_teach.errors import UserError


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file (YAML, JSON); unreadable or not UTF-8 is a one-line UserError
    naming the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text "
                        f"(byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for every non-blank line; a bad line is a UserError."""
    path = Path(path)
    try:
        handle = path.open("rb")  # decoded line by line, so a non-UTF-8 byte names its line
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}: line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                                f"save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}: line {number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file so readers see either the old content or the new, never half of it.

    The temporary file is created with mode 0666 and O_EXCL by hand rather than by
    `tempfile.mkstemp`, which always makes 0600 files: outputs must follow the user's umask
    like any other tool's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask. Read from /proc where Linux has it: setting the umask to learn it
    (the portable way, below) briefly changes it for every thread of the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(root: str | Path) -> None:
    """Give the file `root`, or every file under the directory `root`, the mode a plain `open`
    would have given it (0666 minus the umask). For files written by libraries that create
    them 0600 whatever the umask: safetensors' `save_file` (model.safetensors) does."""
    root = Path(root)
    mode = 0o666 & ~current_umask()
    for path in [root] if root.is_file() else root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    lines = [_dumps(r) for r in records]
    write_text_atomic(path, "".join(lines))
    return len(lines)


class RecordLog:
    """A resumable JSONL output: `<name>.part` while running, `<name>` once finalized.

    Records are appended with one `write` + flush + fsync per batch; on reopen a torn last
    line (the process died mid-write) is cut off, so the file always holds whole records.
    `keys()` tells a re-run what is already done.
    """

    def __init__(self, path: str | Path, key: str = "id"):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.part.exists():
            # A finished output being extended (e.g. a re-run with a larger --limit).
            self.part.write_bytes(self.path.read_bytes())
        if self.part.exists():
            _drop_torn_tail(self.part)
        self._keys = {r[self.key] for r in self.records()}

    def records(self) -> list[dict[str, Any]]:
        if not self.part.exists():
            return []
        return read_jsonl(self.part)

    def keys(self) -> set[Any]:
        return set(self._keys)

    def append(self, records: list[dict[str, Any]]) -> None:
        fresh = [r for r in records if r[self.key] not in self._keys]
        if not fresh:
            return
        with self.part.open("a", encoding="utf-8") as handle:
            handle.write("".join(_dumps(r) for r in fresh))
            handle.flush()
            os.fsync(handle.fileno())
        self._keys.update(r[self.key] for r in fresh)

    def finalize(self, order: list[Any] | None = None) -> list[dict[str, Any]]:
        """Publish the records (in `order` of keys when given) under the final name."""
        records = self.records()
        if order is not None:
            by_key = {r[self.key]: r for r in records}
            records = [by_key[k] for k in order if k in by_key]
        write_jsonl_atomic(self.path, records)
        self.part.unlink(missing_ok=True)
        return records


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
