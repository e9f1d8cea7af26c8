"""The `candidates: evolution:` section of a search file -> (SearchSpace, EvolutionSettings).

Every key is optional (defaults in brackets); errors are one-line `InputError`s naming the key:

    population_size [20]  offspring [= population_size]  generations [20]  stall_generations [5]
    max_atoms [16]  min_atoms [1]
    composition: [3, 1]               fixed ratio per element (else variable composition)
    fraction_range: {Au: [0.0, 0.5]}  allowed atomic fraction per element (variable composition)
    fractions: {heredity: 0.3, softmode: 0.25, lattice: 0.15, permutation: 0.1,
                transmutation: 0.1, random: 0.1}
    elite [population_size // 2]  fittest_fraction [0.6]  tournament_size [2]
    niche_tol [0.3]  hull_tol [0.001 eV/atom]  volume_range [[0.6, 2.0]]  distance_factor [0.75]
    seed [the search's seed]
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

from csp.errors import InputError
from csp.evolution.search import DEFAULT_FRACTIONS, OPERATOR_NAMES, EvolutionSettings
from csp.evolution.space import SearchSpace

KEYS = ("population_size", "offspring", "generations", "stall_generations", "max_atoms", "min_atoms",
        "composition", "fraction_range", "fractions", "elite", "fittest_fraction", "tournament_size",
        "niche_tol", "hull_tol", "volume_range", "distance_factor", "seed")


def _int(sec: Mapping, key: str, where: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    v = sec.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InputError(f"{where}.{key}: expected an integer {rng}, got {v!r}")
    return int(v)


def _float(sec: Mapping, key: str, where: str, default: float, lo: float, hi: float | None = None) -> float:
    v = sec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InputError(f"{where}.{key}: expected a number {rng}, got {v!r}")
    return float(v)


def _pair(v: Any, key: str, where: str) -> tuple[float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v) or not 0 <= v[0] <= v[1]:
        raise InputError(f"{where}.{key}: expected [low, high] with 0 <= low <= high, got {v!r}")
    return float(v[0]), float(v[1])


def from_section(section: Mapping[str, Any] | None, elements: Sequence[str], seed: int = 0,
                 where: str = "candidates.evolution") -> tuple[SearchSpace, EvolutionSettings, int]:
    """Validate the section; returns (search space, settings, seed)."""
    sec = {} if section is None or section is True else section
    if not isinstance(sec, Mapping):
        raise InputError(f"{where}: expected a mapping of settings, got {sec!r}")
    unknown = sorted(set(sec) - set(KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key '{unknown[0]}'; allowed: {', '.join(KEYS)}")
    elements = list(elements)
    pop = _int(sec, "population_size", where, 20, 2, 100000)
    comp = sec.get("composition")
    if comp is not None:
        if (not isinstance(comp, (list, tuple)) or len(comp) != len(elements)
                or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0 for c in comp)
                or sum(comp) == 0):
            raise InputError(f"{where}.composition: expected {len(elements)} non-negative integers "
                             f"(one per element {','.join(elements)}), got {comp!r}")
        comp = tuple(int(c) for c in comp)
    fr_range = sec.get("fraction_range", {}) or {}
    if not isinstance(fr_range, Mapping):
        raise InputError(f"{where}.fraction_range: expected a mapping element -> [low, high], got {fr_range!r}")
    ranges = {}
    for el, v in fr_range.items():
        if el not in elements:
            raise InputError(f"{where}.fraction_range: '{el}' is not one of the elements {','.join(elements)}")
        lo, hi = _pair(v, f"fraction_range.{el}", where)
        if hi > 1.0:
            raise InputError(f"{where}.fraction_range.{el}: fractions must lie in [0, 1], got {v!r}")
        ranges[el] = (lo, hi)
    fractions = sec.get("fractions", DEFAULT_FRACTIONS)
    if not isinstance(fractions, Mapping):
        raise InputError(f"{where}.fractions: expected a mapping operator -> share, got {fractions!r}")
    for name, v in fractions.items():
        if name not in OPERATOR_NAMES:
            raise InputError(f"{where}.fractions: unknown operator '{name}'; allowed: {', '.join(OPERATOR_NAMES)}")
        _float(fractions, name, f"{where}.fractions", 0.0, 0.0)
    if sum(float(v) for v in fractions.values()) <= 0:
        raise InputError(f"{where}.fractions: at least one operator needs a positive share")
    max_atoms = _int(sec, "max_atoms", where, 16, 1, 200)
    min_atoms = _int(sec, "min_atoms", where, 1, 1, max_atoms)
    space = SearchSpace(tuple(elements), max_atoms=max_atoms, min_atoms=min_atoms, composition=comp,
                        fraction_range=ranges,
                        volume_range=_pair(sec.get("volume_range", [0.6, 2.0]), "volume_range", where),
                        distance_factor=_float(sec, "distance_factor", where, 0.75, 0.1, 1.5))
    if space.volume_range[0] <= 0:
        raise InputError(f"{where}.volume_range: the low factor must be positive")
    settings = EvolutionSettings(
        population_size=pop, offspring=_int(sec, "offspring", where, None, 1),
        generations=_int(sec, "generations", where, 20, 0), stall_generations=_int(sec, "stall_generations", where, 5, 1),
        elite=_int(sec, "elite", where, None, 0), fractions={k: float(v) for k, v in fractions.items()},
        fittest_fraction=_float(sec, "fittest_fraction", where, 0.6, 0.01, 1.0),
        tournament_size=_int(sec, "tournament_size", where, 2, 1),
        niche_tol=_float(sec, "niche_tol", where, 0.3, 0.0), hull_tol=_float(sec, "hull_tol", where, 0.001, 0.0))
    return space, settings, _int(sec, "seed", where, seed, 0)
