"""The prototype library: crystal structure types read from ``prototypes/*.yaml`` and decorated.

Each YAML file describes one prototype: ``name``, ``strukturbericht``, ``prototype`` (the
compound), ``pearson``, ``space_group`` (+ optional ``setting`` in ASE's convention: 1 = first
origin choice / hexagonal axes, 2 = second origin choice), ``lattice`` (a, b, c in Å, α, β, γ in
degrees, of a representative compound; missing values follow from the crystal system),
``sites`` (Wyckoff label, representative fractional ``coords``, ``sublattice``: the element of
the prototype compound that occupies it), ``aflow`` (AFLOW prototype label) and ``source``.
The structure is built with `ase.spacegroup.crystal`.

Where the library lives: ``$CSP_PROTOTYPES`` (a directory) if set; else the copy installed with
the package (the top-level ``prototypes/`` directory is shipped in the wheel as the package data
``csp/_prototypes/``, see ``setup.py``); else, in a source checkout (``pip install -e .``), the
top-level ``prototypes/`` directory itself.

Decoration (`decorate`): with k search elements and s sublattices, every sublattice receives
one element. If s ≤ k, every injective assignment is made (unary prototypes give each pure
element, binary prototypes in a ternary search give every ordered pair); if s > k, every
assignment that uses all k elements. Assignments related by a symmetry of the prototype that
swaps sublattices (e.g. Cs↔Cl in B2) give the same crystal and are emitted once (checked with
pymatgen's StructureMatcher). The cell is scaled isotropically to the Vegard volume of the
decorated composition (`csp.structures.volume`).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml
from ase import Atoms
from ase.data import atomic_numbers
from ase.spacegroup import crystal

from csp.errors import InputError
from csp.validate import fail, integer, mapping, number, sequence
from csp.structures.volume import vegard_volume
from csp.structures.wyckoff import primitive_cell, space_group

_REQUIRED = ("name", "strukturbericht", "prototype", "pearson", "space_group", "lattice",
             "sites", "source")


@dataclass(frozen=True)
class Site:
    """One Wyckoff site of a prototype (fractional coordinates of a representative point)."""

    wyckoff: str
    coords: tuple[float, float, float]
    sublattice: str


@dataclass(frozen=True)
class Prototype:
    """A prototype crystal structure from the library."""

    name: str
    strukturbericht: str
    prototype: str
    pearson: str
    space_group: int
    cellpar: tuple[float, float, float, float, float, float]  # Å, degrees
    sites: tuple[Site, ...]
    source: str
    setting: int = 1
    aflow: str = ""
    note: str = ""
    path: str = field(default="", compare=False)

    @property
    def sublattices(self) -> list[str]:
        """Sublattice labels in order of first appearance."""
        return list(dict.fromkeys(s.sublattice for s in self.sites))

    @property
    def pearson_count(self) -> int:
        """Atoms per cell according to the Pearson symbol (primitive cell for hR)."""
        return int(self.pearson[2:])

    def build(self, assignment: dict[str, str] | None = None, primitive: bool = False) -> Atoms:
        """The structure with sublattice -> element `assignment` (default: the prototype's own
        elements) at the representative lattice parameters (Å)."""
        assignment = assignment or {s: s for s in self.sublattices}
        conv = crystal([assignment[s.sublattice] for s in self.sites],
                       basis=[s.coords for s in self.sites], spacegroup=self.space_group,
                       setting=self.setting, cellpar=list(self.cellpar))
        if not primitive:
            return conv
        return primitive_cell(conv.cell[:], conv.get_scaled_positions(), conv.numbers,
                              space_group(self.space_group).centering)


def _installed_library() -> Path | None:
    """``csp/_prototypes`` of an installed (non-editable) csp, or None."""
    res = resources.files("csp").joinpath("_prototypes")
    return res if isinstance(res, Path) and res.is_dir() else None


def library_dir() -> Path:
    """Directory of the prototype library: $CSP_PROTOTYPES, else the installed package data
    (csp/_prototypes), else <checkout>/prototypes."""
    env = os.environ.get("CSP_PROTOTYPES")
    if env:
        path = Path(env)
    else:
        path = _installed_library() or Path(__file__).resolve().parents[2] / "prototypes"
    if not path.is_dir():
        raise InputError(f"prototype library '{path}' not found: set CSP_PROTOTYPES to a "
                         "directory of prototype YAML files (prototypes/ of the csp source)")
    return path


def _cellpar(lat: Any, space_group: int) -> tuple[float, ...]:
    lat = mapping(lat, "lattice")
    if "a" not in lat:
        fail("lattice", "needs at least 'a'")
    length = {k: number(lat.get(k, lat["a"]), f"lattice.{k}", positive=True) for k in ("a", "b", "c")}
    a = length["a"]
    if space_group >= 195:
        b = c = a
    elif space_group >= 75:
        b, c = a, length["c"]
    else:
        b, c = length["b"], length["c"]
    gamma = 120.0 if 143 <= space_group <= 194 else number(lat.get("gamma", 90.0), "lattice.gamma", positive=True)
    alpha = number(lat.get("alpha", 90.0), "lattice.alpha", positive=True)
    beta = number(lat.get("beta", 90.0), "lattice.beta", positive=True)
    return (a, b, c, alpha, beta, gamma)


def _site(value: Any, key: str) -> Site:
    s = mapping(value, key, ("wyckoff", "coords", "sublattice"))
    for k in ("wyckoff", "coords", "sublattice"):
        if k not in s:
            fail(f"{key}.{k}", "missing (a site needs wyckoff, coords (3 numbers), sublattice)")
    coords = sequence(s["coords"], f"{key}.coords")
    if len(coords) != 3:
        fail(f"{key}.coords", f"expected 3 numbers, got {len(coords)}")
    site = Site(str(s["wyckoff"]), tuple(number(x, f"{key}.coords[{i}]") for i, x in enumerate(coords)),
                str(s["sublattice"]))
    if site.sublattice not in atomic_numbers:
        fail(f"{key}.sublattice", f"'{site.sublattice}' must be the element of the prototype compound on that site")
    return site


def load_prototype(path: str | Path) -> Prototype:
    """Read and validate one prototype YAML file (errors: `<file>: key '<key>': <message>`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return _prototype(data, path)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _prototype(data: Any, path: Path) -> Prototype:
    data = mapping(data, "")
    for k in _REQUIRED:
        if k not in data:
            fail(k, "missing (required)")
    space_group = integer(data["space_group"], "space_group", lo=1, hi=230)
    sites = tuple(_site(s, f"sites[{i}]") for i, s in enumerate(sequence(data["sites"] or [], "sites")))
    if not sites:
        fail("sites", "expected at least one site")
    return Prototype(
        name=str(data["name"]), strukturbericht=str(data["strukturbericht"]),
        prototype=str(data["prototype"]), pearson=str(data["pearson"]), space_group=space_group,
        cellpar=_cellpar(data["lattice"], space_group), sites=sites,
        source=str(data["source"]), setting=int(data.get("setting", 1)),
        aflow=str(data.get("aflow", "")), note=str(data.get("note", "")), path=str(path))


@lru_cache(maxsize=4)
def _load_all(directory: str) -> tuple[Prototype, ...]:
    protos = [load_prototype(p) for p in sorted(Path(directory).glob("*.yaml"))]
    names = [p.name.lower() for p in protos]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"prototype library {directory}: duplicate name(s) {sorted(dup)}")
    return tuple(protos)


def list_prototypes() -> list[Prototype]:
    """All prototypes of the library, sorted by file name."""
    return list(_load_all(str(library_dir())))


def get_prototype(name: str) -> Prototype:
    """Prototype by name, Strukturbericht symbol, compound or AFLOW label (case-insensitive)."""
    key = str(name).strip().lower()
    protos = list_prototypes()
    for attr in ("name", "strukturbericht", "prototype", "aflow"):
        hits = [p for p in protos if getattr(p, attr).lower() == key]
        if len(hits) == 1:
            return hits[0]
    raise InputError(f"unknown prototype '{name}' (see `csp prototypes list`)")


def _check_elements(elements: Sequence[str] | str) -> list[str]:
    if isinstance(elements, str):
        elements = [e.strip() for e in elements.split(",") if e.strip()]
    elements = list(elements)
    if not elements:
        raise InputError("prototypes: no elements given")
    for e in elements:
        if e not in atomic_numbers or e == "X":
            raise InputError(f"prototypes: unknown element '{e}'")
    if len(set(elements)) != len(elements):
        raise InputError(f"prototypes: repeated element in {','.join(elements)}")
    return elements


def assignments(n_sublattices: int, elements: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Element per sublattice: injective if s ≤ k, else every map that uses all k elements."""
    if n_sublattices <= len(elements):
        yield from itertools.permutations(elements, n_sublattices)
    else:
        for combo in itertools.product(elements, repeat=n_sublattices):
            if len(set(combo)) == len(elements):
                yield combo


def decorate(name_or_all: str | Sequence[str], elements: Sequence[str] | str, *,
             primitive: bool = True) -> Iterator[Atoms]:
    """Decorated prototypes: every distinct sublattice assignment of `elements`, scaled to the
    Vegard volume (Å³). ``name_or_all`` is a prototype name (see `get_prototype`), a list of
    names, or "all".
    Cells are primitive unless ``primitive=False``. Provenance in ``atoms.info``."""
    elements = _check_elements(elements)
    names = [name_or_all] if isinstance(name_or_all, str) else list(name_or_all)
    if any(str(n).lower() == "all" for n in names):
        protos = list_prototypes()
    else:
        protos = list(dict.fromkeys(get_prototype(n) for n in names))
    for proto in protos:
        yield from _decorate_one(proto, elements, primitive)


def _decorate_one(proto: Prototype, elements: list[str], primitive: bool) -> Iterator[Atoms]:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    matcher = StructureMatcher(scale=True, attempt_supercell=False)
    kept: dict[str, list] = {}  # reduced formula -> pymatgen structures emitted
    subl = proto.sublattices
    for combo in assignments(len(subl), elements):
        assignment = dict(zip(subl, combo))
        atoms = proto.build(assignment, primitive=primitive)
        atoms.set_cell(atoms.cell * (vegard_volume(atoms.get_chemical_symbols())
                                     / atoms.get_volume()) ** (1.0 / 3.0), scale_atoms=True)
        structure = AseAtomsAdaptor.get_structure(atoms)
        seen = kept.setdefault(structure.composition.reduced_formula, [])
        if any(matcher.fit(structure, other) for other in seen):
            continue
        seen.append(structure)
        atoms.info.clear()
        atoms.info.update(source="prototype", prototype=proto.name,
                          strukturbericht=proto.strukturbericht,
                          prototype_compound=proto.prototype,
                          prototype_space_group=proto.space_group,
                          assignment=",".join(f"{s}={e}" for s, e in assignment.items()))
        yield atoms
