"""The Problem record and the loaders every command shares through `--data SOURCE --limit N`.

A SOURCE is one of:
- `gsm8k`, `math500`             the benchmark from the Hugging Face Hub (needs network)
- `rg:TASK[?seed=S&k=v...]`       seeded reasoning-gym problems, generated offline;
                                  `&solutions=worked` adds step-by-step solutions to the
                                  arithmetic tasks (llm_teach/data/worked.py)
- `path/to/file.jsonl|.json|.parquet`
                                  a local file: Problem records, the original GSM8K format
                                  (`question`, `answer` ending in `#### N`), the MATH format
                                  (`problem`, `solution`, `answer`), or any columns mapped with
                                  `columns={"question": COL, "answer": COL, ...}`
A local file always wins: with a path nothing is fetched.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from llm_teach.data.jsonl import iter_jsonl, read_text
from llm_teach.errors import UserError

NAMED_SOURCES = ("gsm8k", "math500")
HUB = {  # source -> (hub dataset, config, split for evaluation, split for training)
    "gsm8k": ("openai/gsm8k", "main", "test", "train"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "test"),
}
SOURCE_HELP = "gsm8k, math500, rg:TASK (reasoning-gym), or a local .jsonl/.json/.parquet file"


@dataclass
class Problem:
    """A question with a gold final answer (`answer`) and, when known, a worked `solution`.
    `source` says where it came from and so how answers are graded (see `grading_benchmark`)."""

    id: str
    question: str
    answer: str
    source: str
    solution: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProblemList(list):
    """The problems `load_problems` returns: a plain list that also remembers the SOURCE it was
    loaded from, so a run directory can record where its problems came from (beside their
    content hash) without every stage's signature carrying the source along."""

    def __init__(self, problems=(), source: str | None = None):
        super().__init__(problems)
        self.source = source


def grading_benchmark(source: str) -> str:
    """The grading rule for problems of a source: GSM8K numeric, reasoning-gym's own
    verifiers, and math-verify (which handles numbers and expressions) for everything else."""
    if source.startswith("rg:"):
        return source.split("?")[0]
    return source if source in ("gsm8k", "math500") else "math500"


def local_file(source: str) -> Path | None:
    """The path a SOURCE names when it is a local file (whether or not it exists), else None."""
    if source.startswith("rg:"):
        return None
    path = Path(source)
    return path if path.suffix in (".jsonl", ".json", ".parquet") or path.exists() else None


def load_problems(source: str, limit: int | None = None, *, split: str = "test",
                  columns: dict[str, str] | None = None, data_format: str | None = None) -> ProblemList:
    """Load problems from a SOURCE (see module docstring). `split` picks the hub split for named
    sources; `data_format` ("gsm8k"/"math500") labels a local file's problems for grading."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})")
    if source.startswith("rg:"):
        return ProblemList(load_reasoning_gym(source, limit), source)
    path = local_file(source)
    if path is not None:
        return ProblemList(load_file(path, limit, columns=columns, label=data_format), source)
    if source in NAMED_SOURCES:
        return ProblemList(load_hub(source, split, limit), f"{source}[{split}]")
    raise UserError(f"unknown data source '{source}' (not a file either); expected {SOURCE_HELP}")


def load_reasoning_gym(source: str, limit: int | None) -> list[Problem]:
    import reasoning_gym

    task, _, query = source[3:].partition("?")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query):
        options[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    seed = options.pop("seed", 0)
    size = options.pop("size", limit or 200)
    solutions = options.pop("solutions", None)
    if solutions not in (None, "worked"):
        raise UserError(f"reasoning-gym source '{source}': solutions must be 'worked' (got '{solutions}')")
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=seed, **options)
    except (KeyError, ValueError) as exc:
        raise UserError(f"reasoning-gym source '{source}': {str(exc).strip(chr(39))}") from None
    except TypeError as exc:
        raise UserError(f"reasoning-gym source '{source}': bad option ({exc})") from None
    name = f"rg:{task}"
    problems = [
        Problem(id=f"{task}-s{seed}-{i}", question=entry["question"], answer=str(entry["answer"]),
                source=name, solution=None, meta=_jsonable(entry.get("metadata", {})))
        for i, entry in enumerate(dataset)
        if limit is None or i < limit
    ]
    if solutions == "worked":
        from llm_teach.data.worked import worked_solution

        if problems and "expression" not in problems[0].meta:
            raise UserError(f"reasoning-gym source '{source}': solutions=worked needs an arithmetic task "
                            f"(one whose problems record an 'expression'); {task} does not")
        for p in problems:
            p.solution = worked_solution(str(p.meta.get("expression", "")), p.answer)
    return problems


def load_hub(name: str, split: str, limit: int | None) -> list[Problem]:
    import datasets

    repo, config, eval_split, train_split = HUB[name]
    split = {"test": eval_split, "train": train_split}.get(split, split)
    try:
        rows = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # the hub raises many types; all mean "could not get it"
        raise UserError(
            f"cannot load '{name}' from the Hugging Face Hub ({type(exc).__name__}); "
            f"pass a local copy with --data PATH"
        ) from None
    problems = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        problems.append(_from_row(dict(row), name, f"{name}-{split}-{i}", f"{repo}[{split}] row {i}", label=name))
    return problems


def load_file(path: Path, limit: int | None, *, columns: dict[str, str] | None = None,
              label: str | None = None) -> list[Problem]:
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.suffix == ".parquet":
        rows = enumerate(read_parquet(path), start=1)
    elif path.suffix == ".json":
        import json

        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects")
        rows = enumerate(data, start=1)
    else:
        rows = iter_jsonl(path)
    problems, seen = [], set()
    for number, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        if columns:
            row = _remap(row, columns, f"{path}: line {number}")
        problem = _from_row(row, label or f"file:{path.name}", f"{path.stem}-{number}",
                            f"{path}: line {number}", label=label)
        if problem.id in seen:
            raise UserError(f"{path}: line {number}: duplicate id '{problem.id}'")
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        raise UserError(f"{path}: no problems found")
    return problems


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """The rows of a parquet file; a file that is not parquet (or cannot be read) is one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable parquet file ({reason})") from None


def _remap(row: dict[str, Any], columns: dict[str, str], where: str) -> dict[str, Any]:
    out = dict(row)
    for field_name, column in columns.items():
        if column not in row:
            raise UserError(f"{where}: missing column '{column}' (mapped to '{field_name}'; found: {', '.join(row)})")
        out[field_name] = row[column]
    return out


def _from_row(row: dict[str, Any], source: str, default_id: str, where: str, label: str | None) -> Problem:
    """Recognize Problem records, GSM8K rows and MATH rows; name what is missing otherwise."""
    question = row.get("question", row.get("problem"))
    if question is None:
        raise UserError(f"{where}: missing column 'question' (or 'problem'); found: {', '.join(row) or 'nothing'}; "
                        f"map columns with --columns question=COL,answer=COL")
    if "answer" not in row:
        raise UserError(f"{where}: missing column 'answer'; found: {', '.join(row)}; "
                        f"map columns with --columns question=COL,answer=COL")
    answer, solution = str(row["answer"]), row.get("solution")
    gsm8k_format = solution is None and "####" in answer
    if gsm8k_format:  # original GSM8K: the answer field is the solution
        solution, answer = answer, answer.rsplit("####", 1)[1].strip().replace(",", "")
    pid = row.get("id", row.get("unique_id", default_id))
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {
        k: v for k, v in row.items() if k not in ("id", "unique_id", "question", "problem", "answer", "solution", "source")
    }
    src = source
    if label is None and isinstance(row.get("source"), str):
        src = row["source"]
    elif label is None and gsm8k_format:  # numeric answers: grade them the GSM8K way
        src = "gsm8k"
    return Problem(id=str(pid), question=str(question), answer=answer, source=src,
                   solution=None if solution is None else str(solution), meta=_jsonable(meta))


def _jsonable(value: Any) -> Any:
    """reasoning-gym metadata holds tuples and sets; records must be plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
