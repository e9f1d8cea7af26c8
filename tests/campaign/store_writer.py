"""Driven by test_store.py: writes batches of candidates, one transaction per batch, resumably.

Each batch inserts 5 candidates, a stage result per candidate and a reference call, and marks
the step `batch-k` in the same transaction; a restarted writer skips finished batches.
"""

import sys

from ase.build import bulk

from csp.campaign.store import CampaignStore


def main(run_dir: str, n_batches: int) -> int:
    store = CampaignStore(run_dir, create=True)
    print("ready", flush=True)
    for k in range(n_batches):
        name = f"batch-{k}"
        if store.step_done(name):
            continue
        with store.transaction():
            structures = []
            for j in range(5):
                atoms = bulk("Cu", "fcc", a=3.6 + 0.001 * (5 * k + j)) * (2, 1, 1)
                atoms.info["source"] = "test"
                atoms.info["batch"] = k
                structures.append(atoms)
            ids = store.add_candidates(structures)
            store.set_stage_results(1, [dict(candidate_id=i, status="converged", energy=-1.0 * i,
                                             atoms=structures[n], grade=1.0, steps=10)
                                        for n, i in enumerate(ids)])
            store.add_reference_call(f"sp-{k}", "single_point", ids[0], True, atoms=structures[0],
                                     energy=float(k), training=(1, k, "test"))
            store.mark_step(name)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
