"""Report: hull.json, symmetrised CIFs (round trip), Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import functools
import json
import re
import tempfile

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifParser

from csp.reference import get_reference
from csp.report import (CandidateRecord, Counts, Failure, LearningRound, ReportData, StageCounts, space_group,
                        write_report)

FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


@functools.lru_cache(maxsize=1)
def _fcc_decorations() -> list[tuple[str, Atoms]]:
    """EMT-relaxed Cu-Au structures on the conventional fcc cell (plus bcc Cu): known symmetry."""
    ref = get_reference({"calculator": "emt", "relax": {"fmax": 0.001, "stress_tol": 0.01}})
    with tempfile.TemporaryDirectory() as tmp:
        return [(name, ref.relax(atoms, f"{tmp}/{name}").atoms) for name, atoms in _unrelaxed()]


def _unrelaxed() -> list[tuple[str, Atoms]]:
    out = []
    for name, symbols in [("cu-fcc", "CuCuCuCu"), ("au-fcc", "AuAuAuAu"), ("L12", "AuCuCuCu"),
                          ("L10", "CuCuAuAu"), ("L12-Au", "CuAuAuAu")]:
        els = re.findall("[A-Z][a-z]", symbols)
        a = 3.61 + (4.07 - 3.61) * els.count("Au") / 4  # Vegard between EMT's Cu and Au
        atoms = Atoms(els, scaled_positions=FCC, cell=[a] * 3, pbc=True)
        out.append((name, atoms))
    out.append(("cu-bcc", bulk("Cu", "bcc", a=2.9, cubic=True)))
    return out


def _emt_energy(atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy() / len(a)


def synthetic(n_extra: int = 30, seed: int = 0, ternary: bool = False) -> ReportData:
    """Candidates with EMT energies as 'reference' and noisy copies as 'MTP' energies."""
    rng = np.random.default_rng(seed)
    cands = []
    for i, (name, atoms) in enumerate(_fcc_decorations()):
        e = _emt_energy(atoms)
        cands.append(CandidateRecord(id=name, origin="prototype", stage="reference", atoms=atoms,
                                     mtp_energies={"stage1": e + rng.normal(0, 0.01), "stage2": e + rng.normal(0, 0.004)},
                                     reference_energy=e))
    if ternary:
        for name, symbols in [("pd-fcc", "PdPdPdPd"), ("CuPd", "CuCuPdPd"), ("AuPd3", "AuPdPdPd")]:
            atoms = Atoms(re.findall("[A-Z][a-z]", symbols), scaled_positions=FCC, cell=[3.85] * 3, pbc=True)
            e = _emt_energy(atoms)
            cands.append(CandidateRecord(id=name, origin="enumerate", stage="reference", atoms=atoms,
                                         mtp_energies={"stage2": e + 0.003}, reference_energy=e))
    for i in range(n_extra):
        atoms = bulk("Cu", "fcc", a=3.8) * (2, 1, 1)
        atoms.rattle(0.03, seed=i)
        atoms.symbols[rng.integers(0, 2)] = "Au"
        e = _emt_energy(atoms)
        stage = ["generated", "stage1", "stage2"][i % 3]
        mtp = {} if stage == "generated" else {"stage1": e + rng.normal(0, 0.01)}
        if stage == "stage2":
            mtp["stage2"] = e + rng.normal(0, 0.005)
        cands.append(CandidateRecord(id=f"r{i}", origin="random", stage=stage, atoms=atoms, mtp_energies=mtp))
    elements = ["Cu", "Au", "Pd"] if ternary else ["Cu", "Au"]
    n_ref = sum(c.reference_energy is not None for c in cands)
    counts = Counts(candidates=len(cands), stages=[StageCounts(1, len(cands) - 10, 20), StageCounts(2, 20, n_ref)],
                    reference_relaxations=n_ref, reference_single_points=42, reference_failures=2)
    rounds = [LearningRound("stage1", k, 10 + 8 * k, 0.02 / (k + 1), 0.03 / (k + 1)) for k in range(4)]
    rounds += [LearningRound("stage2", k, 42 + 5 * k, 0.004, 0.006) for k in range(2)]
    failures = [Failure("r3", "single_point", "scf: KohnShamConvergenceError: did not converge"),
                Failure("r7 <&>", "relax", "timeout: exceeded the wall-time limit of 600 s")]
    return ReportData(elements=elements, reference="emt", reference_settings={"calculator": "emt", "relax": {"fmax": 0.01}},
                      candidates=cands, counts=counts, stage_seconds={"stage1": 12.5, "stage2": 30.0, "reference": 7.25},
                      learning_curve=rounds, failures=failures, sigma={"stage1": 0.01, "stage2": 0.005},
                      name="cu-au-test")


def test_hull_json_schema_and_values(tmp_path):
    data = synthetic()
    paths = write_report(data, tmp_path)
    doc = json.loads((tmp_path / "hull.json").read_text())
    assert doc["schema"] == "csp-hull/1" and doc["elements"] == ["Cu", "Au"] and doc["name"] == "cu-au-test"
    assert doc["reference"] == {"name": "emt", "settings": {"calculator": "emt", "relax": {"fmax": 0.01}}}
    assert doc["counts"] == {"candidates": 36, "stage1_relaxed": 26, "stage1_kept": 20, "stage2_relaxed": 20,
                             "stage2_kept": 6, "reference_relaxations": 6, "reference_single_points": 42,
                             "reference_failures": 2}
    assert doc["wall_time"] == {"stage1": 12.5, "stage2": 30.0, "reference": 7.25}
    hull = data.hull()
    assert [p["id"] for p in doc["hull_phases"]] == [r.id for r in hull.stable()]
    # EMT: L1_2 Cu3Au and L1_0 CuAu are bound; bcc Cu is above fcc Cu
    ids = {p["id"] for p in doc["hull_phases"]}
    assert {"cu-fcc", "au-fcc", "L12", "L10"} <= ids and "cu-bcc" not in ids
    p = {p["id"]: p for p in doc["hull_phases"]}
    assert p["L12"]["space_group"] == "Pm-3m" and p["L12"]["space_group_number"] == 221
    assert p["L10"]["space_group"] == "P4/mmm" and p["L10"]["space_group_number"] == 123
    assert p["cu-fcc"]["space_group"] == "Fm-3m" and p["cu-fcc"]["formation_energy_per_atom"] == 0.0
    e_l12 = _emt_energy(dict(_fcc_decorations())["L12"])
    e_cu, e_au = _emt_energy(dict(_fcc_decorations())["cu-fcc"]), _emt_energy(dict(_fcc_decorations())["au-fcc"])
    assert p["L12"]["formation_energy_per_atom"] == pytest.approx(e_l12 - 0.75 * e_cu - 0.25 * e_au, abs=1e-12)
    assert p["L12"]["energy_per_atom"] == pytest.approx(e_l12, abs=1e-12) and p["L12"]["composition"] == {"Cu": 0.75, "Au": 0.25}
    assert p["L12"]["structure_file"] == "stable/Cu3Au_Pm-3m_L12.cif" and p["L12"]["origin"] == "prototype"
    assert p["L10"]["structure_file"] == "stable/CuAu_P4_mmm_L10.cif"
    for ph in doc["hull_phases"]:
        assert (tmp_path / ph["structure_file"]).exists()
    assert sorted(x.name for x in (tmp_path / "stable").iterdir()) == sorted(
        ph["structure_file"][len("stable/"):] for ph in doc["hull_phases"])
    bcc = next(e for e in doc["entries"] if e["id"] == "cu-bcc")
    assert bcc["e_above_hull"] == pytest.approx(_emt_energy(dict(_fcc_decorations())["cu-bcc"]) - e_cu, abs=1e-12)
    assert doc["failures"][1] == {"id": "r7 <&>", "operation": "relax", "reason": "timeout: exceeded the wall-time limit of 600 s"}
    assert set(paths) >= {"hull.json", "report.md", "report.html", "figures/hull", "figures/funnel",
                          "figures/parity", "figures/learning"}


def test_cif_round_trip(tmp_path):
    data = synthetic(n_extra=0)
    write_report(data, tmp_path)
    doc = json.loads((tmp_path / "hull.json").read_text())
    by_id = {c.id: c.atoms for c in data.candidates}
    matcher = StructureMatcher(primitive_cell=True, scale=False, attempt_supercell=True)
    for ph in doc["hull_phases"]:
        text = (tmp_path / ph["structure_file"]).read_text()
        assert ph["space_group"] in text  # the symmetrised CIF states its space group
        back = CifParser.from_str(text).parse_structures(primitive=False)[0]
        original = AseAtomsAdaptor.get_structure(by_id[ph["id"]])
        assert matcher.fit(original, back), ph["id"]
        assert back.composition.reduced_formula == original.composition.reduced_formula
        assert back.volume / len(back) == pytest.approx(original.volume / len(original), rel=1e-6)
        assert space_group(AseAtomsAdaptor.get_atoms(back)) == (ph["space_group"], ph["space_group_number"])


def _pngs(html_text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)]


def test_markdown_and_html(tmp_path):
    write_report(synthetic(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| Cu3Au | Pm-3m (221) | L12 | prototype | 4 |" in md
    for key in ("hull", "funnel", "parity", "learning"):
        assert f"](figures/{key}.png)" in md
        png = (tmp_path / "figures" / f"{key}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "| r3 | single_point | scf: KohnShamConvergenceError: did not converge |" in md
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "src=\"figures/" not in page and "http" not in page
    images = _pngs(page)
    assert len(images) == 4 and all(i.startswith(b"\x89PNG") for i in images)
    assert '<table id="hull-phases">' in page and "<td>Cu3Au</td>" in page and "<td>Pm-3m (221)</td>" in page
    assert "r7 &lt;&amp;&gt;" in page and "r7 <&>" not in page  # escaped


def test_ternary_report(tmp_path):
    data = synthetic(n_extra=6, ternary=True)
    write_report(data, tmp_path)
    doc = json.loads((tmp_path / "hull.json").read_text())
    assert doc["elements"] == ["Cu", "Au", "Pd"]
    assert {"cu-fcc", "au-fcc", "pd-fcc"} <= {p["id"] for p in doc["hull_phases"]}
    assert len(_pngs((tmp_path / "report.html").read_text())) == 4


def test_report_without_a_hull_yet(tmp_path):
    """A campaign that has not reached the reference stage still gets a report."""
    data = synthetic(n_extra=9)
    for c in data.candidates:
        c.reference_energy = None
        if c.stage == "reference":
            c.stage = "stage2"
    data.learning_curve = []
    write_report(data, tmp_path)
    doc = json.loads((tmp_path / "hull.json").read_text())
    assert doc["hull_phases"] == [] and doc["entries"] == []
    assert doc["notes"] == ["No convex hull yet: no structures with energies to build a hull from."]
    page = (tmp_path / "report.html").read_text()
    assert len(_pngs(page)) == 1 and "No hull phases." in page  # the funnel only


def test_three_stage_screening_and_stage_names(tmp_path):
    data = synthetic(n_extra=6)
    for c in data.candidates:
        if c.stage == "reference":
            c.mtp_energies["stage3"] = c.reference_energy + 0.002
    data.candidates[-1].stage = "stage3"
    data.candidates[-1].mtp_energies["stage3"] = data.candidates[-1].mtp_energies.get("stage1", -0.01)
    data.sigma["stage3"] = 0.002
    assert data.candidates[0].last_mtp_stage() == "stage3"
    write_report(data, tmp_path)
    assert len(_pngs((tmp_path / "report.html").read_text())) == 4
    with pytest.raises(ValueError, match="stage 'stage two'"):
        CandidateRecord(id="x", origin="random", stage="stage two")


def test_structure_without_a_symmetry_cell_is_written_as_p1(tmp_path):
    from csp.report import write_cif

    overlapping = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.001]], cell=[3, 3, 3], pbc=True)
    assert space_group(overlapping) == ("P1", 1)
    assert write_cif(overlapping, tmp_path / "x.cif") == ("P1", 1)
    back = CifParser(str(tmp_path / "x.cif")).parse_structures(primitive=False)[0]
    assert len(back) == 2 and back.volume == pytest.approx(27.0)


# -- collected from a campaign store (csp.report.data.collect) ----------------------------------
def _store_report(tmp_path, new_fields=True, audit=True, within=0.05):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from report_store import make_store, with_audit

    from csp.campaign.store import CampaignStore
    from csp.report import collect

    ids = make_store(tmp_path / "run", new_fields=new_fields)
    with CampaignStore(tmp_path / "run") as store:
        if audit:
            with_audit(store, ids)
        data = collect(store, within=within)
    return ids, data


def test_collect_from_store(tmp_path):
    ids, data = _store_report(tmp_path)
    assert data.elements == ["Cu", "Au"] and data.reference == "emt" and data.name == "cu-au-synthetic"
    assert data.counts.as_dict() == {"candidates": 12, "stage1_relaxed": 12, "stage1_kept": 8, "stage2_relaxed": 8,
                                     "stage2_kept": 8, "reference_relaxations": 8, "reference_single_points": 7,
                                     "reference_failures": 2}
    rec = {c.id: c for c in data.candidates}
    assert rec[str(ids["L12"])].stage == "reference" and rec[str(ids["r0"])].stage == "stage1"
    assert rec[str(ids["lost"])].stage == "stage2" and rec[str(ids["lost"])].reference_energy is None
    assert data.sigma == {"stage1": 0.011, "stage2": 0.006}       # the σ each window used
    assert [s.stage for s in data.stages] == [1, 2]
    s1, s2 = data.stages
    assert (s1.level, s1.window, s1.window_sigmas, s1.bound, s1.passes, s1.rounds, s1.training_size) == \
        (6, 0.08, 4.0, 0.03, 2, 2, 5)
    assert s2.error_model == {"rmse": 0.005, "q95": 0.02, "max": 0.025, "bias": 0.001, "n": 7}
    assert len(s2.audit) == 4 and [p.candidate_id for p in s2.exceeded()] == [str(ids["L10"])]
    assert s2.audited()["max"] == pytest.approx(0.02)
    assert [(s.candidate_id, s.predicted_above_hull) for s in data.skipped] == [(str(ids["r3"]), 0.041)]
    assert data.stop_reason == "every survivor relaxed"
    assert data.reference_stage["refits"] == 1 and data.reference_stage["bound_used"] == 0.015
    assert data.notes[0].startswith("Stage 2: 1 of 4 audited structures have an MTP error above the bound 12.0")
    widened = [n for n in data.notes if n.startswith("Reference stage:")]
    assert len(widened) == 1 and "15.0 meV/atom below its prediction" in widened[0] and "12.0" in widened[0]
    assert "3 candidates the last stage's window had dropped" in widened[0] and data.reference_stage["readmitted"] == 3
    lost = [n for n in data.notes if "the hull may be missing this structure" in n]
    assert len(lost) == 1 and f"Candidate {ids['lost']} (CuAu3) survived stage 2 at" in lost[0]
    assert [f.reason for f in data.failures] == ["scf: did not converge"] * 2
    stable = {r.id for r in data.hull().stable()}                # the one final hull, built by collect
    copies = {str(ids["L12"]), str(ids["L12-copy"])}
    assert data.final_hull is not None and len(stable & copies) == 1
    assert stable - copies == {str(ids[n]) for n in ("cu-fcc", "au-fcc", "L10")}
    assert data.settings["screening"]["stages"][1]["window"] == 3.0


def test_report_from_store(tmp_path):
    ids, data = _store_report(tmp_path)
    paths = write_report(data, tmp_path / "report")
    doc = json.loads(paths["hull.json"].read_text())
    assert doc["within"] == 0.05 and [s["stage"] for s in doc["stages"]] == [1, 2]
    cu3au = [s for s in doc["structures"] if s["formula"] == "Cu3Au"]
    assert len(cu3au) == 1 and cu3au[0]["copies"] == 2                       # the copy is merged
    assert sorted(cu3au[0]["ids"]) == sorted([str(ids["L12"]), str(ids["L12-copy"])])
    assert all((tmp_path / "report" / s["structure_file"]).is_file() for s in doc["structures"])
    assert {s["formula"] for s in doc["structures"]} == {"Cu", "Au", "Cu3Au", "CuAu", "CuAu3"}
    assert doc["stages"][1]["audit_exceeding_bound"] == 1 and doc["skipped_survivors"][0]["reason"]
    md = paths["report.md"].read_text()
    assert "## Screening stages and error model" in md and "| quantity | stage 1 | stage 2 |" in md
    assert "| error bound (meV/atom) | 30.0 | 12.0 |" in md and "| audited: above the bound | 0 | 1 |" in md
    assert "### Skipped survivors" in md and "| screening.stages[0].level | 6 |" in md
    assert "survivors (and 3 re-admitted by a widened bound) relaxed in 2 batches, 1 refit of the potential; bound" \
        " 15.0 meV/atom (audited 12.0)" in md
    assert doc["reference_stage"]["max_prediction_error"] == 0.015
    assert "](structures/Cu3Au_Pm-3m_" in md and "![Audit points: MTP vs reference](figures/audit.png)" in md
    assert "stage 3" not in md and "stage3" not in md
    assert "eV/atom" not in md.replace("meV/atom", "")                        # one unit everywhere


def test_report_from_an_older_store(tmp_path):
    """No per-stage screening details, audit points or skipped survivors: those parts are left out."""
    ids, data = _store_report(tmp_path, new_fields=False, audit=False, within=0.0)
    assert [s.bound for s in data.stages] == [None, None] and data.skipped == [] and data.stop_reason == ""
    paths = write_report(data, tmp_path / "report")
    md = paths["report.md"].read_text()
    assert "error bound" not in md and "audited" not in md and "survivors" not in md
    assert "| σ (meV/atom) | 11.0 | 6.0 |" in md and "| window (meV/atom) | 80.0 | 50.0 |" in md
    assert not (tmp_path / "report" / "figures" / "audit.png").exists()
    doc = json.loads(paths["hull.json"].read_text())
    assert all(s["e_above_hull"] == 0.0 for s in doc["structures"])          # --within 0: the hull phases


def test_counts_of_any_number_of_stages(tmp_path):
    from csp.report import Counts, StageCounts
    from csp.report.render import _funnel

    data = synthetic(n_extra=0)
    data.counts = Counts(candidates=9, stages=[StageCounts(k, 9 - k, 8 - k) for k in (1, 2, 3)])
    assert list(data.counts.as_dict())[1:7] == ["stage1_relaxed", "stage1_kept", "stage2_relaxed", "stage2_kept",
                                                "stage3_relaxed", "stage3_kept"]
    assert [n for n, _ in _funnel(data, 2)] == ["candidates", "stage 1 relaxed", "stage 1 kept", "stage 2 relaxed",
                                                "stage 2 kept", "stage 3 relaxed", "stage 3 kept",
                                                "reference relaxations", "hull phases"]
    data.counts = Counts(candidates=9, stages=[StageCounts(1, 9, 4)])
    assert "stage 2 kept" not in [n for n, _ in _funnel(data, None)]


def test_settings_are_a_readable_table():
    from csp.report.render import flatten

    rows = dict(flatten({"elements": ["Cu", "Pd"], "candidates": {"enumerate": {"lattices": ["fcc"]}, "random": None},
                         "screening": {"stages": [{"level": 6}, {"level": 10, "window": 3.0}]},
                         "dedup": True, "empty": {}}))
    assert rows == {"elements": "Cu, Pd", "candidates.enumerate.lattices": "fcc", "candidates.random": "null",
                    "screening.stages[0].level": "6", "screening.stages[1].level": "10",
                    "screening.stages[1].window": "3.0", "dedup": "true", "empty": "{}"}


def test_report_from_the_stage_records_of_the_audited_screening(tmp_path):
    """The stage summary the audited screening writes: no `window` (the bound is the window,
    window_sigmas × σ), the stage's own list of audited candidates above the bound, σ = inf for a
    stage without audit points (JSON has no infinity: null in hull.json, '∞' on the page)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from report_store import make_store, with_audit

    from csp.campaign.store import CampaignStore
    from csp.report import collect

    ids = make_store(tmp_path / "run")
    with CampaignStore(tmp_path / "run") as store:
        em = {"n": 4, "sigma": 0.009, "sigma_estimate": 0.007, "rmse": 0.008, "bias": 0.001, "q95": 0.012,
              "max": 0.02, "mu": {}}
        store.mark_step("stage1/screened", {"level": 6, "relaxed": 12, "kept": 8, "window_sigmas": 4.0,
                                            "sigma": float("inf"), "bound": float("inf"),
                                            "error_model": {"n": 0}, "kept_untrusted": 0})
        store.mark_step("stage2/screened", {"level": 6, "relaxed": 8, "kept": 8, "window_sigmas": 3.0, "sigma": 0.009,
                                            "bound": 0.027, "error_model": em, "audit_over_bound": [ids["L10"]],
                                            "kept_untrusted": 1, "passes": 3, "mtp_relaxations": 9})
        with_audit(store, ids)
        data = collect(store)
    s1, s2 = data.stages
    assert s2.window == 0.027 and s2.window_sigmas == 3.0 and s2.kept_untrusted == 1
    assert s2.error_model == {k: em[k] for k in ("sigma", "sigma_estimate", "rmse", "q95", "max", "bias", "n")}
    assert [p.candidate_id for p in s2.exceeded()] == [str(ids["L10"])]
    assert f"the audited MTP error of 1 structure(s) (candidates {ids['L10']}) exceeded the bound 27.0" in data.notes[0]
    assert data.sigma == {"stage2": 0.009}
    paths = write_report(data, tmp_path / "report")
    doc = json.loads(paths["hull.json"].read_text())                          # strict JSON: no Infinity
    assert doc["stages"][0]["sigma"] is None and doc["stages"][1]["audit_exceeding_bound"] == 1
    md = paths["report.md"].read_text()
    assert "| σ (meV/atom) | ∞ | 9.0 |" in md and "| window (meV/atom) | ∞ | 27.0 |" in md
    assert "| kept: relaxation broken by extrapolation | 0 | 1 |" in md
    assert "Stage 1 (level 6): kept 8 of 12 relaxed structures (no error model: the window was unbounded); " \
        "audited error RMSE 10.0, max 10.0 meV/atom over 4 structures." in md
