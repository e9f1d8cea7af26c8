"""The `candidates: evolution:` section of a search file -> (SearchSpace, EvolutionSettings, seed).

Every key is optional; its default and limits are those of the field it sets (`SearchSpace`,
`EvolutionSettings`, declared with `csp.validate.setting`), errors are one-line `InputError`s
``key 'candidates.evolution.<key>': ...``. Keys:

    population_size  offspring [= population_size]  generations  stall_generations
    max_atoms  min_atoms
    composition: [3, 1]               fixed ratio per element (else variable composition)
    fraction_range: {Au: [0.0, 0.5]}  allowed atomic fraction per element (variable composition)
    fractions: {heredity: 0.3, softmode: 0.25, lattice: 0.15, permutation: 0.1,
                transmutation: 0.1, random: 0.1}
    elite [population_size // 2]  fittest_fraction  tournament_size
    niche_tol  hull_tol (eV/atom)  volume_range: [low, high]  distance_factor
    seed [the search's seed]
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from csp.errors import InputError
from csp.evolution.search import OPERATOR_NAMES, EvolutionSettings
from csp.evolution.space import SearchSpace
from csp.validate import Section, fail, integer, join, mapping, number, sequence


def from_section(section: Mapping[str, Any] | bool | None, elements: Sequence[str], seed: int = 0,
                 where: str = "candidates.evolution") -> tuple[SearchSpace, EvolutionSettings, int]:
    """Validate the section (None or true: every default); returns (search space, settings, seed)."""
    sec = Section(None if section is True else section, where, SearchSpace, EvolutionSettings, extra=("seed",))
    elements = tuple(elements)
    max_atoms, min_atoms = sec.read("max_atoms"), sec.read("min_atoms")
    if min_atoms > max_atoms:
        fail(sec.path("min_atoms"), f"must not exceed max_atoms ({max_atoms}), got {min_atoms}")
    given: dict[str, Any] = {"elements": elements}
    if "composition" in sec:
        given["composition"] = _composition(sec.get("composition"), sec.path("composition"), elements)
    if "fraction_range" in sec:
        given["fraction_range"] = _fraction_range(sec.get("fraction_range"), sec.path("fraction_range"), elements)
    if "volume_range" in sec:
        given["volume_range"] = _range(sec.get("volume_range"), sec.path("volume_range"), positive=True)
    try:   # what only the whole space can tell, e.g. a composition that fits no allowed cell size
        space = sec.build(SearchSpace, **given)
    except InputError as exc:
        fail(where, str(exc))
    fractions = {"fractions": _fractions(sec.get("fractions"), sec.path("fractions"))} if "fractions" in sec else {}
    settings = sec.build(EvolutionSettings, **fractions)
    return space, settings, integer(sec.get("seed", seed), sec.path("seed"), lo=0)


def _composition(value: Any, key: str, elements: tuple[str, ...]) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = sequence(value, key)
    if (len(items) != len(elements) or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in items)
            or sum(items) == 0):
        fail(key, f"expected {len(elements)} non-negative integers, not all zero (one per element "
                  f"{', '.join(elements)}), got {value!r}")
    return tuple(int(c) for c in items)


def _range(value: Any, key: str, positive: bool = False, hi: float | None = None) -> tuple[float, float]:
    """[low, high] with 0 <= low <= high (0 < low when `positive`; high <= `hi`)."""
    lowest = "0 < low" if positive else "0 <= low"
    top = f" <= {hi}" if hi is not None else ""
    expected = f"expected [low, high] with {lowest} <= high{top}, got {value!r}"
    items = sequence(value, key)
    if len(items) != 2 or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in items):
        fail(key, expected)
    low, high = float(items[0]), float(items[1])
    if not (0 < low if positive else 0 <= low) or low > high or (hi is not None and high > hi):
        fail(key, expected)
    return low, high


def _fraction_range(value: Any, key: str, elements: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    ranges = {}
    for el, pair in mapping(value, key).items():
        if el not in elements:
            fail(key, f"{el!r} is not one of the elements {', '.join(elements)}")
        ranges[el] = _range(pair, join(key, el), hi=1.0)
    return ranges


def _fractions(value: Any, key: str) -> dict[str, float]:
    shares = {name: number(v, join(key, name), lo=0.0)
              for name, v in mapping(value, key, OPERATOR_NAMES).items()}
    if sum(shares.values()) <= 0:
        fail(key, "at least one operator needs a positive share")
    return shares
