"""The store's evolution tables: round trip, idempotent replay, and run directories made before
the tables existed (read without them, created on the next `csp run`)."""

from __future__ import annotations

import sqlite3

from ase.build import bulk

from csp.campaign.store import CampaignStore


def test_offspring_round_trip_and_replay(tmp_path):
    with CampaignStore(tmp_path, create=True) as store:
        cid = store.add_candidates([bulk("Cu", "fcc", a=3.6)])[0]
        rows = store.add_offspring([("g0-0", 0, "seed:random", [], cid, bulk("Cu", "fcc", a=3.6)),
                                    ("g1-0", 1, "lattice", ["g0-0"], None, bulk("Cu", "fcc", a=3.7))])
        assert store.add_offspring([("g1-0", 1, "lattice", ["g0-0"], None, bulk("Cu", "fcc", a=3.7))]) == \
            {"g1-0": rows["g1-0"]}                                          # idempotent on the id
        store.set_offspring_results([{"candidate_id": rows["g1-0"], "status": "converged", "energy": -1.5,
                                      "grade": 1.2, "steps": 7, "atoms": bulk("Cu", "fcc", a=3.61)}], pass_no=0)
        assert store.offspring_pass_done(list(rows.values()), 0) == {rows["g1-0"]}
        store.set_offspring_fields("g1-0", accepted=1, fitness=0.0)
        assert store.add_generation(1, 5, {"generation": 1, "best_fitness": 0.0}) == 5
        assert store.add_generation(1, 9, {"generation": 1, "best_fitness": 1.0}) == 5   # a replay keeps the first
        (rec,) = store.offspring(generation=1)
        assert rec.ident == "g1-0" and rec.parents == ("g0-0",) and rec.accepted and rec.energy == -1.5
        assert abs(rec.atoms.cell[0, 1] - 3.61 / 2) < 1e-12
        assert store.offspring(generation=0)[0].seed_candidate == cid
        both = sorted(rows.values())
        assert [r.row for r in store.offspring(rows=both[::-1])] == both          # by row, whatever the order asked
        assert [r.ident for r in store.offspring(rows=[rows["g1-0"]])] == ["g1-0"]
        assert store.offspring(rows=[rows["g1-0"]], generation=0) == [] and store.offspring(rows=[]) == []
        assert store.generations() == [{"generation": 1, "best_fitness": 0.0, "potential_id": 5}]
        counts = store.counts()
        assert counts["evolution_structures"] == 2 and counts["evolution_generations"] == 1


def test_store_without_evolution_tables(tmp_path):
    with CampaignStore(tmp_path, create=True) as store:
        store.add_candidates([bulk("Cu", "fcc", a=3.6)])
    db = sqlite3.connect(str(tmp_path / "campaign.sqlite"))
    db.execute("DROP TABLE evolution")
    db.execute("DROP TABLE evolution_generations")
    db.commit()
    db.close()
    with CampaignStore(tmp_path) as store:          # `csp report` / `csp status` on an old run directory
        assert store.offspring() == [] and store.generations() == []
        assert "evolution_structures" not in store.counts()
        from csp.report import collect
        assert collect(store).evolution is None
    with CampaignStore(tmp_path, create=True) as store:   # `csp run` adds the tables
        assert store.offspring() == [] and store.add_offspring([("g0-0", 0, "seed", [], None, bulk("Cu"))])
