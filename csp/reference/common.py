"""Validation helpers shared by the reference backends, and the k-point mesh rule.

Every check raises a one-line `InputError` naming the YAML key (e.g. ``reference.ecut``).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import kptdensity2monkhorstpack

from csp.errors import InputError


def show(value: Any) -> str:
    """Short printable form of a user value for error messages."""
    text = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fail(key: str, message: str) -> None:
    raise InputError(f"key '{key}': {message}")


def check_keys(section: dict, allowed: Iterable[str], where: str) -> None:
    """Reject keys of `section` that are not in `allowed` (with a did-you-mean hint)."""
    allowed = tuple(allowed)
    for k in section:
        if not isinstance(k, str) or k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            listed = ", ".join(allowed) if allowed else "none"
            fail(f"{where}.{k}", f"unknown key{hint}; allowed: {listed}")


def number(value: Any, key: str, positive: bool = False, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(key, f"expected a {'positive ' if positive else ''}number, got {show(value)}")
    if positive and value <= 0:
        fail(key, f"expected a positive number, got {value}")
    if lo is not None and value < lo:
        fail(key, f"expected a number >= {lo}, got {value}")
    return float(value)


def integer(value: Any, key: str, lo: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(key, f"expected an integer, got {show(value)}")
    if lo is not None and value < lo:
        fail(key, f"expected an integer >= {lo}, got {value}")
    return int(value)


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        fail(key, f"expected true or false, got {show(value)}")
    return value


def string(value: Any, key: str, choices: Iterable[str] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(key, f"expected a non-empty string, got {show(value)}")
    value = value.strip()
    if choices is not None:
        choices = tuple(choices)
        if value not in choices:
            fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        fail(key, f"expected a mapping of names to values, got {show(value)}")
    return dict(value)


def kpoint_mesh(atoms: Atoms, density: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh with at least `density` points per Å⁻¹ of reciprocal length.

    n_i = ceil(2π |b_i| · density) along periodic directions, 1 along non-periodic ones.
    Computed once from the starting cell of a call and kept fixed during a relaxation, so the
    energy is a smooth function of the cell within one call.
    """
    mesh = kptdensity2monkhorstpack(atoms, kptdensity=density, even=False)
    return tuple(int(n) if p else 1 for n, p in zip(np.asarray(mesh), atoms.pbc))
