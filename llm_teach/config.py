"""Load a config dataclass from YAML plus `--set key=value` overrides; unknown keys are errors.

Each trainer and stage keeps its config dataclass next to its code (the TRL pattern: every
field carries help text, declared with `option`); this module fills one from a file and
overrides and lists its keys (`show_options`). A typo must never be silently ignored: an
unknown key is a UserError naming the file and key, with the closest known key suggested.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from llm_teach.errors import UserError

T = TypeVar("T")


def option(text: str, default: Any = None, factory: Any = None) -> Any:
    """A config field with TRL-style help text (what `--show-options` prints beside the key)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """`(key, default, help)` for every field of a config dataclass, in declaration order; a
    field holding a config dataclass (a stage's `decontamination`) is followed by its own keys
    in `--set` spelling (`decontamination.ngram`)."""
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        nested = dataclasses.is_dataclass(default)
        rows.append((f.name, dataclasses.asdict(default) if nested else default, f.metadata.get("help", "")))
        if nested:
            rows += [(f"{f.name}.{key}", value, text) for key, value, text in describe(type(default))]
    return rows


def read_yaml(path: str | Path) -> dict[str, Any]:
    from llm_teach.data.jsonl import read_text

    path = Path(path)
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of option: value at the top level")
    return data


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["a.b=1", "c=[x, y]"]` -> `{"a": {"b": 1}, "c": ["x", "y"]}`; values are YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}': expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def check_keys(mapping: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """An unknown key is a one-line error naming where it is and the closest known key."""
    allowed = set(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(allowed))}"
            raise UserError(f"{where}: unknown key '{key}'{hint}")


class FieldError(ValueError):
    """A config field holds a value outside its range. It carries the field's `key` so that
    `build` can name it as the user typed it (`--learning-rate` for a flag, `learning_rate` in
    a YAML file or `--set`)."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"'{key}' {problem}")
        self.key = key
        self.problem = problem


def check_fields(obj: Any, **bounds: str) -> None:
    """Validate a config dataclass instance: its `Literal` choices, and the range of each field
    named in `bounds`, written as it reads: `check_fields(self, top_p="(0, 1]", samples=">= 1")`
    (also "> 0", "<= 3", "[0, 1)"). Each config's `__post_init__` calls this once for its own
    fields (a subclass after its parent's), so YAML, `--set`, flags and Python callers are all
    checked in this one place. None passes: an optional field left unset."""
    check_choices(obj)
    for key, spec in bounds.items():
        value = getattr(obj, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
            raise FieldError(key, f"must be a number {_describe(spec)} (got {value!r})")
        if not all(_HOLDS[op](value, x) for op, x in _parse_bounds(spec)):
            raise FieldError(key, f"must be {_describe(spec)} (got {value!r})")


_BOUND = re.compile(r"^\s*(?:(?P<op>>=|>|<=|<)\s*(?P<x>[-+0-9.e]+)"
                    r"|(?P<lo>[\[(])\s*(?P<a>[-+0-9.e]+)\s*,\s*(?P<b>[-+0-9.e]+)\s*(?P<hi>[\])]))\s*$")
_HOLDS = {">=": lambda v, x: v >= x, ">": lambda v, x: v > x, "<=": lambda v, x: v <= x, "<": lambda v, x: v < x}


@functools.lru_cache(maxsize=None)
def _parse_bounds(text: str) -> tuple[tuple[str, float], ...]:
    """">= 0" -> ((">=", 0.0),); "(0, 1]" -> ((">", 0.0), ("<=", 1.0))."""
    match = _BOUND.match(text)
    if not match:
        raise ValueError(f"bad bounds {text!r}")  # a bug in a config class, not a user error
    if match["op"]:
        return ((match["op"], float(match["x"])),)
    return ((">=" if match["lo"] == "[" else ">", float(match["a"])),
            ("<=" if match["hi"] == "]" else "<", float(match["b"])))


def _describe(bounds: str) -> str:
    text = bounds.strip()
    if text.startswith(">= "):
        return f"at least {text[3:]}"
    return text if text[0] in "<>" else f"in {text}"


def flag_names(keys: Iterable[str]) -> dict[str, str]:
    """How a config key is typed as a command-line flag: `learning_rate` -> `--learning-rate`."""
    return {key: "--" + key.replace("_", "-") for key in keys}


def check_choices(obj: Any) -> None:
    """Raise ValueError when a `Literal[...]` field of dataclass `obj` holds another value, so a
    config built directly in Python is as strict as one built from YAML or flags."""
    for name, hint in typing.get_type_hints(type(obj)).items():
        if typing.get_origin(hint) is typing.Literal and getattr(obj, name, None) not in typing.get_args(hint):
            raise ValueError(f"'{name}': {getattr(obj, name)!r} is not one of "
                             f"{', '.join(map(repr, typing.get_args(hint)))}")


def build(cls: type[T], values: dict[str, Any], where: str = "config", spelled: dict[str, str] | None = None) -> T:
    """Instantiate dataclass `cls` from a mapping, checking keys and coercing simple types.
    `spelled` maps keys whose values the user typed as flags to the flag (`flag_names`), so an
    error about one names it the way it was typed: "--learning-rate must be > 0 (got -1.0)"."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    check_keys(values, fields, where)
    spelled = spelled or {}
    kwargs = {key: _coerce(value, hints[key], f"{spelled[key]}" if key in spelled else f"{where}: key '{key}'")
              for key, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise UserError(f"{where}: {exc}") from None
    except FieldError as exc:  # __post_init__ validation of one field
        if exc.key in spelled:
            raise UserError(f"{spelled[exc.key]} {exc.problem}") from None
        raise UserError(f"{where}: {exc}") from None
    except ValueError as exc:  # __post_init__ validation
        raise UserError(f"{where}: {exc}") from None


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
         defaults: dict[str, Any] | None = None, flags: dict[str, Any] | None = None, where: str = "config",
         spelled: dict[str, str] | None = None) -> T:
    """Priority, lowest first: `defaults` (e.g. a pipeline step's values) < YAML file < `flags`
    (options the user typed on the command line) < `--set` overrides. What is typed last and
    most specifically wins, as in most CLIs. `where` names the values in errors; a bad flag is
    named as typed: `spelled[key]`, by default `--key-with-dashes` (`flag_names`)."""
    values = dict(defaults or {})
    if path:
        values = merge(values, read_yaml(path))
        where = str(path)
    if flags:
        values = merge(values, flags)
    sets = parse_overrides(overrides)
    if sets:
        values = merge(values, sets)
        where = f"{where} / --set" if path else "--set"
    typed = {**flag_names(flags or {}), **(spelled or {})}
    return build(cls, values, where, {k: v for k, v in typed.items() if k in (flags or {}) and k not in sets})


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return build(hint, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise UserError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value
