"""Candidate generation for a search: enumeration, prototypes, random structures, dedup.

Every candidate is an `ase.Atoms` with provenance in `atoms.info` (`source` and the
generator's own keys); the list is deterministic for a given search (seeded).
"""

from __future__ import annotations

from typing import Callable, Iterator

from ase import Atoms

from csp.config import Search


def _sources(search: Search) -> Iterator[tuple[str, Iterator[Atoms]]]:
    cand = search.candidates
    elements = list(search.elements)
    if cand.enumerate is not None:
        from csp.structures.enumerate import enumerate_structures

        for lattice in cand.enumerate.lattices:
            yield f"enumerate {lattice}", enumerate_structures(
                lattice, elements, max_atoms=cand.enumerate.max_atoms, min_atoms=cand.enumerate.min_atoms)
    if cand.prototypes:
        from csp.structures.prototypes import decorate

        for name in cand.prototypes:
            yield f"prototypes {name}", decorate(name, elements)
    if cand.random is not None:
        from csp.structures.random_structures import random_structures

        yield "random", random_structures(elements, cand.random.count, cand.random.max_atoms, seed=search.seed)


def generate_candidates(search: Search, log: Callable[[str], None] = lambda msg: None) -> list[Atoms]:
    """All candidates of a search, in a fixed order, deduplicated when `candidates.dedup`."""
    out: list[Atoms] = []
    limit = search.candidates.max_atoms
    for label, source in _sources(search):
        n0 = len(out)
        for atoms in source:
            if limit is None or len(atoms) <= limit:
                out.append(atoms)
        log(f"candidates: {len(out) - n0} from {label}")
    if search.candidates.dedup and len(out) > 1:
        from csp.structures.dedup import deduplicate

        kept = deduplicate(out)
        kept_idx = _kept_indices(kept, len(out))
        log(f"candidates: {len(out)} generated, {len(kept_idx)} distinct after deduplication")
        out = [out[i] for i in kept_idx]
    return out


def _kept_indices(kept, n: int) -> list[int]:
    """Normalise `deduplicate`'s answer (kept indices, or groups of indices) to sorted indices."""
    items = list(kept)
    if items and not isinstance(items[0], (int,)) and hasattr(items[0], "__len__"):
        items = [min(group) for group in items]
    idx = sorted(int(i) for i in items)
    if any(i < 0 or i >= n for i in idx):
        raise RuntimeError("deduplicate returned an index outside the candidate list")
    return idx
