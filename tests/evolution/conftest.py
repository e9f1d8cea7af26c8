"""Shared fixtures: Cu–Au parents and an EMT evaluator."""

import numpy as np
import pytest
from ase.calculators.emt import EMT

from csp.evolution import SearchSpace
from csp.relax import ase_evaluator
from csp.structures.random_structures import random_structures

ELEMENTS = ("Cu", "Au")


@pytest.fixture(scope="session")
def emt_evaluator():
    return ase_evaluator(EMT, ELEMENTS)


@pytest.fixture(scope="session")
def variable_space():
    return SearchSpace(ELEMENTS, max_atoms=8)


@pytest.fixture(scope="session")
def parents():
    """Random symmetric Cu–Au cells (2–8 atoms) with ids."""
    out = list(random_structures(list(ELEMENTS), 16, 8, seed=11, min_atoms=2))
    for k, a in enumerate(out):
        a.info["id"] = f"p{k}"
    return out


@pytest.fixture(scope="session")
def cu3au_parents():
    out = list(random_structures(list(ELEMENTS), 10, 8, seed=5, composition=(3, 1)))
    for k, a in enumerate(out):
        a.info["id"] = f"q{k}"
    return out


def rng(seed=0):
    return np.random.default_rng(seed)
