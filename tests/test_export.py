"""`export_run`: every exported file read back with ASE / csp.mtp.io / ase.db."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_store import make_store  # noqa: E402

from csp.hull import final_hull  # noqa: E402
from csp.campaign.store import CampaignStore  # noqa: E402
from csp.mtp.grade import ActiveSet, grade  # noqa: E402
from csp.mtp.io import cfg_to_atoms, read_cfg, read_mtp  # noqa: E402
from csp.report import export_run  # noqa: E402
from csp.report.export import reduced_formula  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    ids = make_store(base / "run")
    with CampaignStore(base / "run") as store:
        paths = export_run(store, base / "out")
        training = [r.to_atoms() for r in store.training_set()]
        pots = {p["stage"]: p for p in store.potentials()}
        latest = {s: store.latest_potential(s) for s in pots}
        relax = [r for r in store.reference_calls("relax") if r.ok]
        hull = final_hull(store, ["Cu", "Au"])
    return base / "out", paths, ids, training, latest, relax, hull


def test_potentials_and_active_sets(exported):
    out, paths, ids, training, latest, relax, hull = exported
    assert sorted(p.name for p in (out / "potentials").iterdir()) == [
        "stage1.mtp", "stage1.mtp.als", "stage2.mtp", "stage2.mtp.als"]
    for stage, pot in latest.items():
        path = out / "potentials" / f"stage{stage}.mtp"
        assert path.read_text() == pot["mtp"]
        mtp = read_mtp(path)
        aset = ActiveSet.load(str(path) + ".als")
        aset.check(mtp)                                  # built for this potential
        train = training[: pot["n_train"]]
        gammas = np.asarray(grade(mtp, aset, train, species=["Cu", "Au"]))
        assert gammas.max() <= 1.0 + 1e-6                # its own training set interpolates
    assert latest[1]["round"] == 1                       # each stage's final potential


def test_training_set_cfg_and_extxyz(exported):
    out, paths, ids, training, *_ = exported
    cfgs = read_cfg(out / "training" / "training.cfg")
    frames = ase.io.read(out / "training" / "training.extxyz", index=":")
    assert len(cfgs) == len(frames) == len(training) == 6
    for cfg, frame, ref in zip(cfgs, frames, training):
        back = cfg_to_atoms(cfg, ["Cu", "Au"])
        for atoms in (back, frame):
            assert atoms.get_chemical_symbols() == ref.get_chemical_symbols()
            assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-10)
            assert np.allclose(atoms.get_forces(), ref.get_forces(), atol=1e-10)
            assert np.allclose(atoms.get_stress(), ref.get_stress(), atol=1e-10)
        assert np.allclose(cfg.plus_stress, -ref.get_stress() * ref.get_volume(), atol=1e-9)


def test_reference_relaxed_structures(exported):
    out, paths, ids, training, latest, relax, hull = exported
    frames = ase.io.read(out / "reference_relaxed.extxyz", index=":")
    assert len(frames) == len(relax) == 7
    rows = {r.id: r for r in hull.rows}
    for frame, rec in zip(frames, relax):
        row = rows[str(rec.candidate_id)]
        assert frame.info["candidate_id"] == rec.candidate_id and frame.info["source"] == "prototype"
        assert frame.get_potential_energy() == pytest.approx(rec.energy, abs=1e-10)
        assert np.allclose(frame.get_forces(), rec.forces) and np.allclose(frame.get_stress(), rec.stress)
        assert frame.info["e_above_hull"] == pytest.approx(row.e_above_hull, abs=1e-12)
        assert frame.info["formation_energy"] == pytest.approx(row.formation_energy_per_atom, abs=1e-12)


def test_hull_phases_cif_and_poscar(exported):
    out, paths, ids, training, latest, relax, hull = exported
    stable = hull.stable()
    cifs, poscars = sorted((out / "stable").glob("*.cif")), sorted((out / "stable").glob("*.vasp"))
    assert len(cifs) == len(poscars) == len(stable) == 4
    by_id = {r.id: r for r in stable}
    for cif, poscar in zip(cifs, poscars):
        ident = cif.stem.rsplit("_", 1)[1]
        assert poscar.stem == cif.stem and ident in by_id
        relaxed = hull.entry(ident).atoms
        for atoms in (ase.io.read(cif), ase.io.read(poscar, format="vasp")):
            assert reduced_formula(atoms) == reduced_formula(relaxed)
            assert atoms.get_volume() / len(atoms) == pytest.approx(relaxed.get_volume() / len(relaxed), rel=1e-5)
    assert any(p.name.startswith("Cu3Au_Pm-3m_") for p in cifs)


def test_ase_database(exported):
    out, paths, ids, training, latest, relax, hull = exported
    rows = {r.id: r for r in hull.rows}
    with ase.db.connect(str(out / "structures.db")) as db:
        assert db.count() == 7
        got = {row.candidate_id: row for row in db.select()}
        cu3au = db.get(candidate_id=ids["L12"])
        assert cu3au.formula == "AuCu3" and cu3au.reduced_formula == "Cu3Au" and cu3au.space_group == "Pm-3m"
        assert cu3au.space_group_number == 221 and cu3au.source == "prototype" and cu3au.calculator == "emt"
        assert db.count("e_above_hull<0.001") == sum(1 for r in hull.rows if r.e_above_hull < 0.001)
    for cid, row in got.items():
        assert row.e_above_hull == pytest.approx(rows[str(cid)].e_above_hull, abs=1e-12)
        assert row.energy == pytest.approx(hull.entry(str(cid)).energy, abs=1e-10)
        assert row.toatoms().get_chemical_symbols() == hull.entry(str(cid)).atoms.get_chemical_symbols()
        assert row.reduced_formula == rows[str(cid)].formula
    exe = shutil.which("ase")
    if exe:   # the `ase db` command line reads it
        proc = subprocess.run([exe, "db", str(out / "structures.db"), "stable=True", "-c",
                               "id,formula,reduced_formula,space_group,e_above_hull"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "Cu3Au" in proc.stdout and "Pm-3m" in proc.stdout and "Im-3m" not in proc.stdout


def test_export_of_a_campaign_that_has_not_got_far(tmp_path):
    from ase.build import bulk

    with CampaignStore(tmp_path / "run", create=True) as store:
        store.set_meta("elements", ["Cu", "Au"])
        store.add_candidates([bulk("Cu", "fcc", a=3.6)])
        assert export_run(store, tmp_path / "out") == {}
    assert not (tmp_path / "out" / "structures.db").exists()
