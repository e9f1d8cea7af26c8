"""ASE calculator for Moment Tensor Potentials."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from csp.errors import InputError
from csp.mtp.evaluate import calc_efs
from csp.mtp.io import read_mtp
from csp.mtp.potential import MTP


class MTPCalculator(Calculator):
    """ASE calculator: energy/free_energy (eV), energies (eV per atom), forces (eV/Å),
    stress (eV/Å³, Voigt, only for 3D-periodic structures).

    `potential` is an MTP or a path to an .mtp/.almtp file; `species` maps type t to the
    chemical symbol species[t] (default: the potential's csp_elements metadata).
    Results are cached until positions, cell, pbc or numbers change (ASE's check_state).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential: MTP | str | os.PathLike, species: Sequence[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.mtp = potential if isinstance(potential, MTP) else read_mtp(potential)
        species = list(species) if species is not None else self.mtp.elements
        if species is None:
            raise InputError("MTPCalculator: species order unknown (give species=[...]; "
                             "the potential has no csp_elements)")
        if len(species) > self.mtp.species_count:
            raise InputError(f"MTPCalculator: {len(species)} species given but the potential has "
                             f"{self.mtp.species_count}")
        self.species = species

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        efs = calc_efs(self.mtp, self.atoms, self.species)
        self.results = {"energy": efs.energy, "free_energy": efs.energy, "energies": efs.energies,
                        "forces": efs.forces}
        if np.all(self.atoms.pbc):
            self.results["stress"] = efs.stress
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a structure periodic in all three directions")
