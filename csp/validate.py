"""Reading YAML settings: one toolkit, one message format.

Every check raises `csp.errors.InputError` with one line ``key 'a.b.c': message``; where the
YAML comes from a file, the reader of the file puts its name in front. Unknown keys get a
did-you-mean hint.

Settings sections become frozen dataclasses whose field defaults are the only defaults. A field
declared with `setting()` is a YAML key and carries its checks (limits, choices, the YAML key when
it differs from the field name, the unit of the YAML value); `Section` reads a mapping into such
dataclasses, a key not given taking the field's default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from functools import lru_cache
from typing import Any, Iterable, NoReturn, TypeVar

from csp.errors import InputError

T = TypeVar("T")
_META = "csp.validate"


def fail(key: str, message: str) -> NoReturn:
    """Raise the one-line ``key '<key>': <message>`` (the message alone when `key` is empty)."""
    raise InputError(f"key '{key}': {message}" if key else message)


def show(value: Any) -> str:
    """Short printable form of a user value for messages."""
    text = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def join(key: str, name: Any) -> str:
    """The dotted key of `name` inside the section at `key`."""
    return f"{key}.{name}" if key else str(name)


def did_you_mean(word: Any, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the allowed word closest to `word`, else ''."""
    near = difflib.get_close_matches(str(word), list(allowed), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


def mapping(value: Any, key: str, allowed: Iterable[str] | None = None) -> dict:
    """A mapping with string keys (None: empty); with `allowed`, any other key is refused."""
    if value is None:
        return {}
    names = None if allowed is None else tuple(allowed)
    if not isinstance(value, dict):
        expected = f"a mapping with keys {', '.join(names)}" if names else "a mapping of names to values"
        fail(key, f"expected {expected}, got {show(value)}")
    for k in value:
        if not isinstance(k, str):
            fail(key, f"expected names as keys, got {show(k)}")
        if names is not None and k not in names:
            fail(join(key, k), f"unknown key{did_you_mean(k, names)}; allowed: {', '.join(names) or 'none'}")
    return dict(value)


def sequence(value: Any, key: str) -> list:
    """A YAML list."""
    if not isinstance(value, (list, tuple)):
        fail(key, f"expected a list, got {show(value)}")
    return list(value)


def _limits(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    return "" if hi is None else f" <= {hi}"


def integer(value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a boolean) within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(key, f"expected an integer{_limits(lo, hi)}, got {show(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        fail(key, f"expected an integer{_limits(lo, hi)}, got {value}")
    return int(value)


def number(value: Any, key: str, lo: float | None = None, hi: float | None = None,
           positive: bool = False) -> float:
    """A finite number (an integer is accepted) within [lo, hi]; `positive`: > 0."""
    kind = "a positive number" if positive else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(key, f"expected {kind}{_limits(lo, hi)}, got {show(value)}")
    if (positive and value <= 0) or (lo is not None and value < lo) or (hi is not None and value > hi):
        fail(key, f"expected {kind}{_limits(lo, hi)}, got {value}")
    return float(value)


def boolean(value: Any, key: str) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        fail(key, f"expected true or false, got {show(value)}")
    return value


def string(value: Any, key: str, choices: Iterable[str] | None = None) -> str:
    """A non-empty string (stripped); with `choices`, one of them."""
    if not isinstance(value, str) or not value.strip():
        fail(key, f"expected a non-empty string, got {show(value)}")
    value = value.strip()
    if choices is not None:
        one_of(value, key, choices)
    return value


def one_of(value: Any, key: str, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`."""
    allowed = tuple(choices)
    if value not in allowed:
        fail(key, f"expected one of {', '.join(map(str, allowed))}, got {show(value)}"
                  f"{did_you_mean(value, map(str, allowed))}")
    return value


# -- settings dataclasses -----------------------------------------------------------------------

def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, key: str | None = None,
            unit: float = 1.0, lo: float | None = None, hi: float | None = None, positive: bool = False,
            choices: Iterable[Any] | None = None) -> Any:
    """A dataclass field that is a YAML setting: its default (or `factory`), the YAML `key` when it
    is not the field's name, the `unit` of the YAML value (field value = YAML value × unit, e.g.
    GPa in the file and eV/Å³ inside), and the checks of `integer`, `number` and `one_of`.
    No default: the key is required."""
    meta = {_META: {"key": key, "unit": unit, "lo": lo, "hi": hi, "positive": positive,
                    "choices": None if choices is None else tuple(choices)}}
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


def _spec(f: dataclasses.Field) -> dict | None:
    return f.metadata.get(_META)


def yaml_key(f: dataclasses.Field) -> str:
    """The YAML key of a setting field."""
    return _spec(f)["key"] or f.name


def settings_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields of dataclass `cls` that are YAML settings (declared with `setting`)."""
    return tuple(f for f in dataclasses.fields(cls) if _spec(f) is not None)


def default(f: dataclasses.Field) -> Any:
    """The field's default (MISSING when it has none)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def to_yaml(obj: Any) -> dict:
    """The settings of a dataclass instance as YAML keys and YAML units (what `Section` reads back)."""
    out = {}
    for f in settings_fields(type(obj)):
        value, unit = getattr(obj, f.name), _spec(f)["unit"]
        out[yaml_key(f)] = value / unit if unit != 1.0 and isinstance(value, float) else value
    return out


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _plain_type(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a field annotation such as `int | None`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


class Section:
    """A YAML mapping at `key` holding the settings of dataclasses `classes` and the `extra` keys
    its reader handles itself; any other key is refused when the section is made."""

    def __init__(self, value: Any, key: str, *classes: type, extra: Iterable[str] = ()):
        self.key = key
        self.fields = {yaml_key(f): (cls, f) for cls in classes for f in settings_fields(cls)}
        self.values = mapping(value, key, tuple(self.fields) + tuple(extra))

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def path(self, name: str) -> str:
        """The dotted key of `name`."""
        return join(self.key, name)

    def get(self, name: str, fallback: Any = None) -> Any:
        """The YAML value of `name` as written, else `fallback` (for keys no field declares)."""
        return self.values.get(name, fallback)

    def read(self, name: str) -> Any:
        """The checked value of setting `name` (in the field's unit), or the field's default."""
        cls, f = self.fields[name]
        if name not in self.values:
            value = default(f)
            if value is dataclasses.MISSING:
                fail(self.path(name), "missing (required)")
            return value
        return self._check(cls, f, self.values[name])

    def build(self, cls: type[T], **given: Any) -> T:
        """An instance of `cls`: `given` fields as passed, the settings given in the YAML checked,
        every other field its default."""
        kwargs = dict(given)
        for f in settings_fields(cls):
            name = yaml_key(f)
            if f.name not in kwargs and (name in self.values or default(f) is dataclasses.MISSING):
                kwargs[f.name] = self.read(name)
        return cls(**kwargs)

    def _check(self, cls: type, f: dataclasses.Field, value: Any) -> Any:
        spec, key = _spec(f), self.path(yaml_key(f))
        kind, optional = _plain_type(_hints(cls)[f.name])
        if value is None and optional:
            return None
        if kind is bool:
            value = boolean(value, key)
        elif kind is int:
            value = integer(value, key, spec["lo"], spec["hi"])
        elif kind is float:
            value = number(value, key, spec["lo"], spec["hi"], spec["positive"]) * spec["unit"]
        elif kind is str:
            value = string(value, key)
        elif dataclasses.is_dataclass(kind):
            return read(kind, value, key)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: a {kind} setting is read by its section's reader")
        return value if spec["choices"] is None else one_of(value, key, spec["choices"])


def read(cls: type[T], value: Any, key: str) -> T:
    """Dataclass `cls` from the YAML mapping `value` at `key` (every key one of its settings)."""
    return Section(value, key, cls).build(cls)
