"""Pieces of the campaign loop: candidate generation, the diverse initial subset, reference calls
through the farm (stored once), and the σ domain mask."""

from __future__ import annotations

import re

import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from csp.campaign.farm import Farm, SerialComm
from csp.campaign.generate import generate_candidates
from csp.campaign.model import relevant
from csp.campaign.store import CampaignStore
from csp.config import load_search
from csp.campaign.learn import diverse_subset
from csp.hull import atom_counts
from csp.campaign.references import Job, run_references


def search(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_search(path, run_dir=tmp_path / "run")


def test_generation_counts_and_dedup(tmp_path):
    s = search(tmp_path, "elements: [Cu, Pd]\ncandidates: {enumerate: {lattices: [fcc], max_atoms: 4},"
                         " prototypes: [A1, L1_2]}\n")
    cands = generate_candidates(s)
    # 29 fcc derivatives with 1-4 atoms (2, 2, 6, 19); the decorated A1 (Cu, Pd) and L1_2 (Cu3Pd,
    # CuPd3) prototypes are fcc derivatives already enumerated, so deduplication drops them
    assert len(cands) == 29
    assert all(a.info["source"] == "enumerate" for a in cands)
    s2 = search(tmp_path, "elements: [Cu, Pd]\ncandidates: {enumerate: {lattices: [fcc], max_atoms: 4},"
                          " prototypes: [A1, L1_2], dedup: false, max_atoms: 2}\n")
    assert len(generate_candidates(s2)) == 2 + 2 + 2  # N<=2 derivatives, A1 x2; L1_2 has 4 atoms


def test_diverse_subset_covers_compositions_smallest_first():
    cands = []
    for cid, (formula, n) in enumerate([("Cu", 1), ("Cu2", 2), ("Pd", 1), ("CuPd", 2), ("Cu2Pd2", 4),
                                         ("Cu3Pd", 4), ("Cu6Pd2", 8), ("CuPd3", 4)], start=1):
        atoms = bulk("Cu", "fcc", a=3.6) * (n, 1, 1)
        syms = []
        for el, k in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
            syms += [el] * int(k or 1)
        atoms.set_chemical_symbols(syms)
        cands.append((cid, atom_counts(atoms)))
    first = diverse_subset(cands, 5, seed=0)
    assert first[:2] == [1, 3]  # the pure elements first, smallest cells
    assert set(first[2:]) == {4, 6, 8}  # then one per binary composition (CuPd as the 2-atom cell)
    assert diverse_subset(cands, 5, seed=0) == first  # seeded, deterministic
    assert sorted(diverse_subset(cands, 100, seed=1)) == list(range(1, 9))


def test_reference_calls_are_stored_once(tmp_path):
    s = search(tmp_path, "elements: [Cu, Pd]\nreference: {calculator: emt}\n")
    farm = Farm(SerialComm())
    with CampaignStore(s.run_dir, create=True) as store:
        ids = store.add_candidates([bulk("Cu", "fcc", a=3.6), bulk("Pd", "fcc", a=3.9)])
        jobs = [Job(f"sp:c{i}", i, store.candidate(i)) for i in ids]
        assert run_references(store, farm, s, jobs, "single_point", training=(1, 0, "test")) == 2
        assert run_references(store, farm, s, jobs, "single_point", training=(1, 0, "test")) == 0
        recs = store.training_set()
        assert [r.key for r in recs] == ["sp:c1", "sp:c2"]
        from ase.calculators.emt import EMT
        ref = bulk("Cu", "fcc", a=3.6)
        ref.calc = EMT()
        assert recs[0].energy == pytest.approx(ref.get_potential_energy(), abs=1e-10)
        relax = run_references(store, farm, s, [Job("relax:c1", 1, store.candidate(1))], "relax")
        assert relax == 1 and store.reference_call("relax:c1").steps > 0
        # the same configuration under another key is not computed again: the earlier call is
        # added to the training set of the new request instead
        again = [Job("sp:again:c1", 1, store.candidate(1)), Job("sp:twin:c1", 1, store.candidate(1))]
        assert run_references(store, farm, s, again, "single_point", training=(2, 0, "test")) == 0
        assert store.reference_call("sp:again:c1") is None and len(store.training_set()) == 2
        # identical configurations within one request are computed once
        moved = store.candidate(2)
        moved.positions += 0.01
        twins = [Job("sp:m1", 2, moved), Job("sp:m2", 2, moved.copy())]
        assert run_references(store, farm, s, twins, "single_point") == 1


def test_sigma_domain_mask():
    structures = []
    for e_per_atom, n in [(-3.0, 1), (-2.9, 2), (-1.0, 1), (-3.1, 4)]:
        atoms = bulk("Cu", "fcc", a=3.6) * (n, 1, 1)
        atoms.calc = SinglePointCalculator(atoms, energy=e_per_atom * n)
        structures.append(atoms)
    assert relevant(structures, 0.5).tolist() == [True, True, False, True]
    assert relevant(structures, 3.0).tolist() == [True, True, True, True]
