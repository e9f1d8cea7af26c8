"""Atomic volumes of the elements (Å³/atom) and Vegard's rule for initial cell volumes.

Source, in order of preference:

1. ASE's ``ase.data.reference_states`` — the low-temperature crystal structures and lattice
   constants tabulated by C. Kittel, *Introduction to Solid State Physics* (Wiley). Used for
   every element whose cell content is unambiguous: fcc (4 atoms per cubic cell), bcc (2),
   sc (1), diamond (8), hcp (2; V = √3/2·a²·c), body-centred tetragonal (In: 2, β-Sn: 4) and
   rhombohedral cells with an explicit basis (As, Sb, Bi, Hg, Sm).
2. Otherwise (molecular solids H, N, O, F, Cl, Br, I; noble gas He; complex structures B, P,
   S, Ga, Mn, U, Np, Pu, Pa; the trigonal chains Se and Te, which ASE labels "hcp"; elements
   without a reference state such as Pm, At, Rn, Ra, Am … Es): the molar volume of the solid
   from pymatgen's periodic table (``Element.molar_volume``, cm³/mol, compiled from
   WebElements), converted with Avogadro's number.

Elements with neither (e.g. Fr, Fm and heavier) raise `InputError`.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Iterable

import numpy as np
from ase.data import atomic_numbers, reference_states

from csp.errors import InputError

AVOGADRO = 6.02214076e23
_CM3_PER_MOL_TO_A3 = 1e24 / AVOGADRO
# ASE labels trigonal Se and Te (3-atom helical chains) "hcp"; their Kittel cell holds 3 atoms.
_NOT_REALLY_HCP = {"Se", "Te"}


def _kittel_volume(symbol: str) -> float | None:
    """Volume per atom (Å³) from ASE's Kittel reference state, or None if ambiguous."""
    state = reference_states[atomic_numbers[symbol]]
    if state is None or symbol in _NOT_REALLY_HCP:
        return None
    sym = state["symmetry"]
    a = state.get("a")
    if sym == "fcc":
        return a**3 / 4.0
    if sym == "bcc":
        return a**3 / 2.0
    if sym == "sc":
        return a**3
    if sym == "diamond":
        return a**3 / 8.0
    if sym == "hcp":
        return np.sqrt(3.0) / 2.0 * a**2 * (a * state["c/a"]) / 2.0
    if sym == "bct":
        basis = state.get("basis")
        natoms = 2 * (len(basis) if basis is not None else 1)
        return a**2 * (a * state["c/a"]) / natoms
    if sym == "rhombohedral" and state.get("basis_x") is not None:
        ca = np.cos(np.radians(state["alpha"]))
        cell = a**3 * np.sqrt(1.0 - 3.0 * ca**2 + 2.0 * ca**3)
        return cell / len(state["basis_x"])
    return None


def _molar_volume(symbol: str) -> float | None:
    """Volume per atom (Å³) from pymatgen's molar volume (WebElements), or None."""
    from pymatgen.core.periodic_table import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mv = Element(symbol).molar_volume
    if mv is None:
        return None
    return float(mv) * _CM3_PER_MOL_TO_A3


@lru_cache(maxsize=None)
def atomic_volume(symbol: str) -> float:
    """Volume per atom of the elemental solid, in Å³ (Kittel via ASE; pymatgen fall-back)."""
    if not isinstance(symbol, str) or symbol not in atomic_numbers or symbol == "X":
        raise InputError(f"unknown element '{symbol}'")
    volume = _kittel_volume(symbol)
    if volume is None:
        volume = _molar_volume(symbol)
    if volume is None:
        raise InputError(f"no reference atomic volume for element '{symbol}'")
    return float(volume)


def atomic_volume_source(symbol: str) -> str:
    """Which table `atomic_volume(symbol)` came from: 'kittel' or 'webelements'."""
    atomic_volume(symbol)
    return "kittel" if _kittel_volume(symbol) is not None else "webelements"


def vegard_volume(symbols: Iterable[str]) -> float:
    """Total cell volume (Å³) of a list of atoms by Vegard's rule: the sum of atomic volumes."""
    total = 0.0
    count = 0
    for s in symbols:
        total += atomic_volume(s)
        count += 1
    if count == 0:
        raise InputError("vegard_volume: empty list of atoms")
    return total


__all__ = ["atomic_volume", "vegard_volume", "atomic_volume_source"]
