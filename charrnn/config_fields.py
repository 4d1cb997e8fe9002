"""Typed, range-checked dataclass fields: how a config value is read and held to its rules.

Each field's type annotation and its `spec(...)` metadata are the whole validation table: one
generic checker (`checked`) reads them, and each dataclass adds only the rules that tie two
fields together (`_cross_check`). A `Section` validates in `__post_init__`, so a config built
in code is held to the same rules as one read from a file. Numbers written as text ("2e-3",
which YAML 1.1 reads as a string) count as numbers.
"""

import dataclasses
import difflib
import math
import operator
import re
import types
from dataclasses import field, fields
from typing import Any, Callable, ClassVar

from charrnn.errors import UsageError


class ConfigError(UsageError):
    """An invalid config value; `key` is the dotted key at fault (e.g. "train.learning_rate")."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def spec(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
          ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, choices: tuple[str, ...] | None = None,
          check: Callable[[Any], str | None] | None = None) -> Any:
    """A dataclass field carrying its own constraints; `check(value)` returns a problem or None."""
    rules = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "check": check}
    return field(default=default, default_factory=default_factory,
                 metadata={k: v for k, v in rules.items() if v is not None})


class Section:
    """Validation shared by the config dataclasses: every field checked, then cross-field rules."""

    _section: ClassVar[str]  # dotted-key prefix: "data", "model", "train"; "" at the top level

    def __post_init__(self) -> None:
        for f in fields(self):
            key = f"{self._section}.{f.name}" if self._section else f.name
            setattr(self, f.name, checked(key, getattr(self, f.name), f.type, f.metadata))
        self._cross_check()

    def _cross_check(self) -> None:
        """Rules involving more than one field; raise ConfigError naming the key to change."""

    def _key(self, name: str) -> str:
        return f"{self._section}.{name}" if self._section else name


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def show(value: Any) -> str:
    """A short rendering of a user value for an error message."""
    if value is None:
        return "null"  # spelled as in YAML, which is what the user typed
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def checked(key: str, value: Any, annotation: Any, rules: dict) -> Any:
    """Coerce `value` to the field's annotated type and apply its rules; ConfigError otherwise."""
    value = _coerced(key, value, annotation)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_range(key, value, rules)
    if "choices" in rules and value not in rules["choices"]:
        choices = ", ".join(rules["choices"])
        raise ConfigError(key, f"{key} must be one of {choices} (got {show(value)})")
    problem = rules["check"](value) if value is not None and "check" in rules else None
    if problem:
        raise ConfigError(key, f"{key} {problem}")
    return value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number",
               str: "a non-empty string", list[str]: "a non-empty list of strings",
               list[int]: "a non-empty list of integers",
               type(None): "null"}


def member_types(annotation: Any) -> tuple:
    """The member types of an annotation: (str, NoneType) for `str | None`."""
    return annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)


def _coerced(key: str, value: Any, annotation: Any) -> Any:
    """The value as the first annotated type it can stand for; numbers written as text count."""
    kinds = member_types(annotation)
    for kind in kinds:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and (number := _as_int(value)) is not None:
            return number
        if kind is float and (number := _as_float(value)) is not None:
            return number
        if kind is str and isinstance(value, str) and value:
            return value
        if kind == list[str] and isinstance(value, list) and value and all(
                isinstance(item, str) and item for item in value):
            return value
        if kind == list[int] and isinstance(value, list) and value and all(
                _as_int(item) is not None for item in value):
            return [_as_int(item) for item in value]
        if dataclasses.is_dataclass(kind) and isinstance(value, kind):
            return value
    wanted = " or ".join(_KIND_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
                         for kind in kinds)
    misread_text = str in kinds and not isinstance(value, (str, list, type(None)))
    hint = "; quote text that YAML would read as something else" if misread_text else ""
    raise ConfigError(key, f"{key} must be {wanted} (got {show(value)}){hint}")


def _as_int(value: Any) -> int | None:
    """An int for an int, an integral float, or text such as "1e3"; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = _as_float(value)
    # beyond 2**53 a float no longer holds every integer, so "1e30" is not taken as a count
    if number is None or not number.is_integer() or abs(number) > 2**53:
        return None
    return int(number)


def _as_float(value: Any) -> float | None:
    """A finite float for an int, a float, or text such as "2e-3" (YAML 1.1 reads that as text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int with hundreds of digits
        return None
    return number if math.isfinite(number) else None


_BOUNDS = (("ge", ">=", operator.ge), ("gt", ">", operator.gt),
           ("le", "<=", operator.le), ("lt", "<", operator.lt))


def _check_range(key: str, value: float, rules: dict) -> None:
    limits = [(symbol, rules[name], holds) for name, symbol, holds in _BOUNDS if name in rules]
    if not all(holds(value, limit) for _, limit, holds in limits):
        wanted = " and ".join(f"{symbol} {limit:g}" for symbol, limit, _ in limits)
        raise ConfigError(key, f"{key} must be {wanted} (got {value:g})")


def unknown_key(key: str, valid: list[str]) -> ConfigError:
    """The error for a key not in the schema, with the closest valid spelling or the full list."""
    prefix, _, last = key.rpartition(".")
    close = difflib.get_close_matches(last, valid, n=1)
    if close:
        suggestion = f"{prefix}.{close[0]}" if prefix else close[0]
        return ConfigError(key, f"unknown key {key!r}; did you mean {suggestion!r}?")
    where = f" in {prefix}" if prefix else ""
    return ConfigError(key, f"unknown key {key!r}; valid keys{where}: {', '.join(valid)}")
