"""Which search-file changes a resumed campaign refuses.

A run directory belongs to one search. On resume, the stored search (its YAML mapping, `name`
and `run_dir` excluded) is compared with the new one key by key; `changed_keys` lists the dotted
paths that differ, leaving out the keys that cannot change any result and may therefore change
between runs of a week-long campaign (a longer time limit for the next calls, another way to
launch the same code, an extra rescue setting):

    reference.timeout     wall-time limit per attempt
    reference.isolation   child process or in-process
    reference.fallbacks   settings tried after a failed attempt
    reference.command     how VASP / pw.x is launched (e.g. the number of MPI ranks)
    progress, logging     output only (reserved names, should the search file grow them)
"""

from __future__ import annotations

import json
from typing import Any

# dotted paths (or top-level names) whose value may change on resume
MAY_CHANGE = ("name", "run_dir", "progress", "logging",
              "reference.timeout", "reference.isolation", "reference.fallbacks", "reference.command")

__all__ = ["MAY_CHANGE", "changed_keys"]


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, keys strings (as stored in the campaign store)."""
    return json.loads(json.dumps(value, default=str))


def _reference_section(value: Any) -> Any:
    # `reference: gpaw` is shorthand for `reference: {calculator: gpaw}`
    return {"calculator": value} if isinstance(value, str) else value


def _diff(old: Any, new: Any, prefix: str, out: list[str], ignore: tuple[str, ...]) -> None:
    if prefix in ignore:
        return
    if isinstance(old, dict) and new is None:   # a section left out: its keys are absent
        new = {}
    elif isinstance(new, dict) and old is None:
        old = {}
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            a, b = old.get(key), new.get(key)
            if path == "reference":
                a, b = _reference_section(a), _reference_section(b)
            _diff(a, b, path, out, ignore)
        return
    if old != new:
        out.append(prefix or "(whole file)")


def changed_keys(old: dict | None, new: dict | None, ignore: tuple[str, ...] = MAY_CHANGE) -> list[str]:
    """Dotted paths (e.g. 'screening.stages', 'reference.ecut') whose values differ between two
    search mappings, in file order, leaving out `ignore` (default: `MAY_CHANGE`). Lists are
    compared whole; a key present on one side only counts as changed."""
    out: list[str] = []
    _diff(_plain(old or {}), _plain(new or {}), "", out, tuple(ignore))
    return out
