"""The start structures of a learning loop, read from the store a batch at a time.

Rank 0 never holds a stage's pool: it keeps each item's composition (from the stored formula)
and reads structures when a batch of tasks is built (`many`), so that its memory grows by a few
hundred bytes per candidate, not by the structures (the issue's budget: ≤ 4 KB per candidate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Iterator, Sequence

from ase import Atoms

from csp.campaign.store import CampaignStore
from csp.hull import atom_counts


class StartStructures(Mapping):
    """item -> start structure (a read-only mapping over sorted items), with the items'
    compositions held in memory and the structures loaded on demand by `load(ids)`."""

    def __init__(self, counts: dict[int, dict[str, float]], load: Callable[[Sequence[int]], dict[int, Atoms]]):
        self._counts = dict(sorted(counts.items()))
        self._load = load

    def __getitem__(self, item: int) -> Atoms:
        if item not in self._counts:
            raise KeyError(item)
        return self._load([item])[item]

    def __iter__(self) -> Iterator[int]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def many(self, items: Sequence[int]) -> dict[int, Atoms]:
        """Structures of `items` (one read)."""
        return self._load(list(items))

    def counts(self, item: int) -> dict[str, float]:
        """Composition of `item`: {element: atoms in the cell}."""
        return self._counts[item]


def in_memory(structures: Mapping[int, Atoms]) -> StartStructures:
    """Start structures that are already in memory (an evolution generation, a test)."""
    held = dict(structures)
    return StartStructures({i: atom_counts(a) for i, a in held.items()},
                           lambda ids: {i: held[i] for i in ids})


def stage_start(store: CampaignStore, index: int) -> StartStructures:
    """Start structures of screening stage `index` (1-based): every candidate for stage 1; for
    stage k > 1 the candidates stage k−1 kept, as stage k−1 relaxed them."""
    if index == 1:
        return StartStructures(store.candidate_counts(), lambda ids: dict(store.candidates(ids)))
    kept = store.kept_ids(index - 1)

    def load(ids: Sequence[int]) -> dict[int, Atoms]:
        found = store.stage_structures(index - 1, ids)
        for i, atoms in found.items():
            atoms.info["candidate_id"] = int(i)
        return found

    return StartStructures(store.candidate_counts(kept), load)


def stage_origins(store: CampaignStore, index: int) -> Callable[[Sequence[int]], dict[int, Atoms]] | None:
    """The original structures (as generated) of screening stage `index`'s items, when its start
    structures are not those (stage k > 1); None for stage 1, whose start structures are."""
    if index == 1:
        return None
    return lambda ids: dict(store.candidates(ids))
