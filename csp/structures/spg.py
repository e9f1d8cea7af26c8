"""Every spglib call of csp goes through `call` (errors as None) or `new_error_handling`: no
DeprecationWarning.

spglib 2.7+ warns (DeprecationWarning) on *every* call while its old error handling is on
(its default up to at least 2.8: failures return None and leave a message in a global). The
new handling raises `spglib.error.SpglibError` instead and will be the only one from spglib 3.
`call` opts in to the new handling for csp's own call only (through the environment variable
``SPGLIB_OLD_ERROR_HANDLING`` that spglib reads on each call, restored afterwards, so pymatgen
and ASE keep whatever behaviour they expect) and turns a SpglibError back into the None that
csp's call sites test for. The same code runs on spglib < 2.7 (None on failure, no warning)
and on spglib 3 (exceptions only).

Results are spglib's own types: `get_symmetry_dataset` returns a `SpglibDataset` (read it by
attribute, ``ds.number``; item access is deprecated), `get_spacegroup_type` a
`SpaceGroupType`, `get_symmetry` / `get_symmetry_from_database` plain dicts.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import spglib

_ENV = "SPGLIB_OLD_ERROR_HANDLING"
try:
    from spglib.error import SpglibError
except ImportError:  # spglib < 2.7: errors are returned as None only
    class SpglibError(Exception):
        """Placeholder: never raised by this spglib."""


@contextmanager
def new_error_handling() -> Iterator[None]:
    """Inside: spglib raises SpglibError instead of returning None, and does not warn.

    Also for libraries that call spglib for csp (pymatgen's SpacegroupAnalyzer, CifWriter):
    wrap the call and catch the exception."""
    old = os.environ.get(_ENV)
    os.environ[_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = old


def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` for a spglib function; None if spglib reports an error.

    Exceptions that are not spglib's (a TypeError from a malformed cell, ...) propagate.
    """
    with new_error_handling():
        try:
            return func(*args, **kwargs)
        except SpglibError:
            return None


def symmetry_dataset(cell: tuple, symprec: float = 1e-5, **kwargs: Any):
    """`spglib.get_symmetry_dataset` of ``cell = (lattice, fractional positions, numbers)``,
    or None."""
    return call(spglib.get_symmetry_dataset, cell, symprec=symprec, **kwargs)


def operation_count(atoms: Any, symprec: float) -> int:
    """Number of space-group operations of the periodic cell `atoms` (rotations with their
    translations, the cell's own lattice translations included) within `symprec` Å; 0 when
    spglib finds none. Two cells of the same atoms compare by symmetry through this count."""
    cell = (atoms.cell.array, atoms.get_scaled_positions(wrap=True), atoms.numbers)
    sym = call(spglib.get_symmetry, cell, symprec=symprec)
    return 0 if sym is None else len(sym["rotations"])


def symmetry_raised(origin: Any, final: Any, symprec: float) -> bool:
    """Whether `final` (a relaxation of `origin`, same atoms) has more space-group operations
    than `origin` within `symprec` Å: a relaxation that ends there may have stopped on a saddle
    that its symmetry makes stationary (e.g. L1_0 on its Bain path at B2, c/a = 1), not at
    the minimum a relaxation of `origin` reaches."""
    return operation_count(final, symprec) > operation_count(origin, symprec)
