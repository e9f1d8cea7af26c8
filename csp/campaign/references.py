"""Reference calls of a campaign: one farm task per call, each stored once as it arrives.

A configuration is never computed twice: before any single point, the store is asked for a
successful single point of the same structure (`structure_hash`), and identical configurations
within one request are computed once. Energies eV, forces eV/Å, stress eV/Å³.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ase import Atoms

from csp.campaign.farm import Farm
from csp.campaign.store import CampaignStore, structure_hash
from csp.config import Search
from csp.reference import Reference

log = logging.getLogger("csp")

SINGLE_POINT, RELAX = "single_point", "relax"


@dataclass(frozen=True)
class ReferenceTask:
    """One reference call for a farm worker (pickles): the search's configured reference, the
    operation (single_point or relax), the structure and its working directory."""

    reference: Reference
    operation: str
    atoms: Atoms
    workdir: str


def run_reference_task(task: ReferenceTask) -> dict:
    """Run one reference call in its own working directory (on any rank)."""
    ref = task.reference
    out = ref.single_point(task.atoms, task.workdir) if task.operation == SINGLE_POINT \
        else ref.relax(task.atoms, task.workdir)
    return {"ok": out.ok, "atoms": out.atoms, "energy": out.energy, "forces": out.forces,
            "stress": out.stress, "reason": out.reason, "seconds": out.seconds, "workdir": out.workdir,
            "steps": out.steps}


@dataclass(frozen=True)
class Job:
    """A requested reference call: its key in the store, the candidate it belongs to (if any)
    and the structure."""

    key: str
    candidate_id: int | None
    atoms: Atoms


def run_references(store: CampaignStore, farm: Farm, search: Search, jobs: Sequence[Job], operation: str,
                   training: tuple[int, int, str] | None = None,
                   progress: Callable[[str, int], Any] | None = None) -> int:
    """Reference calls for `jobs` not yet in the store; each result is stored as it arrives
    (and added to the training set when `training=(stage, round, source)` is given). A single
    point whose structure was computed before (under another key) is not repeated: the earlier
    call joins the training set instead. Returns the number of calls made."""
    todo: list[Job] = []
    seen: set[str] = set()
    reused = 0
    for job in jobs:
        done = store.reference_call(job.key)
        if done is not None:
            if training is not None and done.ok:
                store.add_to_training(done.id, *training)
            continue
        if operation == SINGLE_POINT:
            h = structure_hash(job.atoms)
            earlier = store.reference_call_by_hash(SINGLE_POINT, h)
            if earlier is not None:
                if training is not None:
                    store.add_to_training(earlier.id, *training)
                reused += 1
                continue
            if h in seen:
                continue
            seen.add(h)
        todo.append(job)
    if reused:
        log.info("%d requested single points were computed before (same structure): reused", reused)
    if not todo:
        return 0
    bar = progress(f"reference {operation.replace('_', ' ')}s", len(todo)) if progress else None
    calls_dir = search.run_dir / "reference"

    def store_one(i: int, out: dict) -> None:
        job = todo[i]
        store.add_reference_call(job.key, operation, job.candidate_id, out["ok"], atoms=out["atoms"],
                                 energy=out["energy"], forces=out["forces"], stress=out["stress"],
                                 reason=out["reason"], seconds=out["seconds"], workdir=out["workdir"],
                                 steps=out["steps"], training=training,
                                 input_hash=structure_hash(job.atoms) if operation == SINGLE_POINT else None)
        if not out["ok"]:
            log.warning("reference %s %s failed: %s", operation, job.key, out["reason"])
        if bar is not None:
            bar.update(1)

    tasks = [ReferenceTask(search.reference, operation, job.atoms, str(calls_dir / job.key.replace(":", "-")))
             for job in todo]
    farm.map(run_reference_task, tasks, on_result=store_one)
    if bar is not None:
        bar.close()
    return len(todo)
