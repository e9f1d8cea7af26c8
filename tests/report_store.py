"""A small synthetic campaign store (Cu-Au, EMT energies as the 'reference') for the report,
export and status tests: two screening stages, potentials, a training set, reference
relaxations (one failed survivor, one duplicate of a hull phase), audit points, skipped
survivors. No campaign is run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

sys.path.insert(0, str(Path(__file__).parent))
from test_report import _fcc_decorations  # noqa: E402

from csp.campaign.store import CampaignStore  # noqa: E402

LEVEL = 6


@dataclass
class Audit:
    candidate_id: int
    round: int
    mtp_energy_per_atom: float
    ref_energy_per_atom: float
    e_above_mtp_hull: float


def emt(atoms: Atoms) -> Atoms:
    a = atoms.copy()
    a.calc = EMT()
    a.get_potential_energy()
    a.get_forces()
    a.get_stress()
    return a


def potential_text(seed: int = 0) -> str:
    from csp.campaign.model import dump
    from csp.mtp.contraction import init_mtp

    return dump(init_mtp(LEVEL, ["Cu", "Au"], min_dist=1.6, max_dist=5.0, radial_basis_size=6, seed=seed))


def make_store(run_dir, new_fields: bool = True, finished: bool = True) -> dict:
    """Write the store; returns {name: candidate id} (names: cu-fcc, au-fcc, L12, L10, L12-Au,
    cu-bcc, L12-copy, lost, r0..r3). `new_fields`: the per-stage screening details, audit points
    and skipped survivors a newer csp records (False: a store as older versions wrote it)."""
    rng = np.random.default_rng(1)
    relaxed = dict(_fcc_decorations())
    copy = relaxed["L12"].copy()
    copy.positions += copy.cell[0] * 0.25 + copy.cell[1] * 0.25   # same structure, translated ...
    copy = copy[[2, 0, 3, 1]]                                      # ... and re-ordered
    copy.wrap()
    lost = relaxed["L12-Au"].copy()
    lost.rattle(0.05, seed=3)
    structures = dict(relaxed, **{"L12-copy": copy, "lost": lost})
    for i in range(4):
        a = bulk("Cu", "fcc", a=3.8) * (2, 1, 1)
        a.rattle(0.05, seed=i)
        a.symbols[i % 2] = "Au"
        structures[f"r{i}"] = a
    names = list(structures)
    store = CampaignStore(run_dir, create=True)
    with store:
        store.set_meta("name", "cu-au-synthetic")
        store.set_meta("elements", ["Cu", "Au"])
        store.set_meta("reference", {"calculator": "emt", "relax": {"fmax": 0.01, "stress_tol": 0.1,
                                                                    "max_steps": 300}})
        store.set_meta("search", {"elements": ["Cu", "Au"], "seed": 0,
                                  "candidates": {"enumerate": {"lattices": ["fcc"], "max_atoms": 4},
                                                 "prototypes": False},
                                  "screening": {"stages": [{"level": LEVEL, "window": 4.0},
                                                           {"level": LEVEL, "window": 3.0}],
                                                "training": {"max_iter": 50}}})
        for n, a in structures.items():
            a.info["source"] = "random" if n.startswith("r") else "prototype"
        ids = dict(zip(names, store.add_candidates([structures[n] for n in names])))
        store.mark_step("generate", {"candidates": len(ids)})
        energy = {n: emt(a).get_potential_energy() / len(a) for n, a in structures.items()}
        # training set: single points of a few candidates (stage 0 = initial), then stage 1 and 2 rounds
        k = 0
        for stage, rnd, group in [(0, 0, ["cu-fcc", "au-fcc", "L10"]), (1, 1, ["r0", "r1"]), (2, 1, ["L12"])]:
            for n in group:
                a = emt(structures[n])
                a.rattle(0.02, seed=k)
                a = emt(a)
                store.add_reference_call(f"sp:{stage}:{rnd}:c{ids[n]}", "single_point", ids[n], True, atoms=a,
                                         energy=a.get_potential_energy(), forces=a.get_forces(),
                                         stress=a.get_stress(), seconds=0.1, training=(stage, rnd, "test"))
                k += 1
        store.add_reference_call("sp:1:1:c-bad", "single_point", ids["r2"], False, reason="scf: did not converge")
        store.add_potential(1, 0, LEVEL, potential_text(0), 0.020, 3, {"rmse_energy": 0.012})
        store.add_potential(1, 1, LEVEL, potential_text(1), 0.011, 5, {"rmse_energy": 0.006})
        store.add_potential(2, 0, LEVEL, potential_text(2), 0.006, 6, {"rmse_energy": 0.004})
        store.mark_step("initial_training", {"requested": 3})
        stage1 = [n for n in names]
        stage2 = [n for n in names if not n.startswith("r")]
        for stage, members, noise in ((1, stage1, 0.01), (2, stage2, 0.004)):
            store.set_stage_results(stage, [dict(candidate_id=ids[n], status="converged", potential_id=stage,
                                                 energy=(energy[n] + rng.normal(0, noise)) * len(structures[n]),
                                                 grade=1.0, steps=10, atoms=structures[n]) for n in members],
                                    pass_no=0)
            kept = stage2 if stage == 1 else stage2
            store.set_kept(stage, [ids[n] for n in kept])
            info = {"relaxed": len(members), "kept": len(kept), "window": [0.08, 0.05][stage - 1],
                    "sigma": [0.011, 0.006][stage - 1]}
            if new_fields:
                info.update(level=LEVEL, bound=[0.03, 0.012][stage - 1], passes=2, mtp_relaxations=len(members) + 3,
                            error_model={"rmse": [0.011, 0.005][stage - 1], "q95": 0.02, "max": 0.025,
                                         "bias": 0.001, "n": 7})
            store.mark_step(f"stage{stage}/screened", info)
        store.set_meta("stage_seconds", {"generate": 0.5, "initial_training": 2.0, "stage1": 12.5,
                                         "stage2": 30.0, "reference": 7.25})
        for n in stage2:
            if n == "lost":
                store.add_reference_call(f"relax:c{ids[n]}", "relax", ids[n], False, reason="scf: did not converge")
                continue
            a = emt(structures[n])
            store.add_reference_call(f"relax:c{ids[n]}", "relax", ids[n], True, atoms=a,
                                     energy=a.get_potential_energy(), forces=a.get_forces(),
                                     stress=a.get_stress(), seconds=0.2, steps=5)
        info = {"relaxations": len(stage2)}
        if new_fields:
            info.update(survivors=len(stage2) + 1, relaxed=len(stage2), stop_reason="every survivor relaxed",
                        batches=2, refits=1, bound=0.012, bound_used=0.015, max_prediction_error=0.015, readmitted=3,
                        skipped=[{"candidate_id": ids["r3"], "predicted_above_hull": 0.041,
                                  "reason": "a relaxed duplicate (L12) is lower"}])
        store.mark_step("reference_relaxed", info)
        if finished:
            store.mark_step("hull", {"phases": 4})
    return ids


def audit_points(ids: dict) -> dict[int, list[Audit]]:
    """Audit points per stage (stage 2 has one above its 12 meV/atom bound)."""
    relaxed = dict(_fcc_decorations())
    out = {1: [], 2: []}
    for stage, noise in ((1, 0.01), (2, 0.004)):
        for k, n in enumerate(["cu-fcc", "au-fcc", "L12", "L10"]):
            e = emt(relaxed[n]).get_potential_energy() / 4
            err = noise * (-1) ** k
            if stage == 2 and n == "L10":
                err = 0.02
            out[stage].append(Audit(ids[n], 1, e + err, e, 0.0))
    return out


def with_audit(store: CampaignStore, ids: dict) -> CampaignStore:
    """Give an opened store the `audit_points(stage)` a newer CampaignStore has."""
    points = audit_points(ids)
    store.audit_points = lambda stage: points.get(int(stage), [])
    return store
