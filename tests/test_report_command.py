"""`csp report RUN_DIR` and `csp export RUN_DIR`: glue between the campaign store, the report and the export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from csp.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from report_store import make_store  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cmd") / "run"
    make_store(path)
    return path


def test_report_command_writes_the_report(run_dir, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(run_dir), "--out", str(out), "--within", "20"]) == 0
    doc = json.loads((out / "hull.json").read_text())
    assert doc["name"] == "cu-au-synthetic" and len(doc["hull_phases"]) == len(list((out / "stable").glob("*.cif")))
    assert doc["within"] == pytest.approx(0.020)
    assert max(s["e_above_hull"] for s in doc["structures"]) <= 0.020 and len(doc["structures"]) == 5
    assert doc["counts"]["stage2_kept"] == 8 and "stage3_kept" not in doc["counts"]
    assert (out / "report.html").stat().st_size > 50_000
    for name in ("structures.db", "reference_relaxed.extxyz", "training/training.cfg", "potentials/stage2.mtp"):
        assert (out / name).is_file(), name   # the report directory holds the export too
    printed = capsys.readouterr().out
    assert "report.html" in printed and "potentials/" in printed


def test_report_command_default_directory(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "report.html").is_file()


def test_export_command(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "-o", str(tmp_path / "x")]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "x" / "structures.db") in printed
    assert (tmp_path / "x" / "potentials" / "stage1.mtp.als").is_file()
    assert main(["export", str(run_dir)]) == 0 and (run_dir / "export" / "structures.db").is_file()


def test_report_command_bad_input(tmp_path, run_dir, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(run_dir), "--within", "-5"]) == 2
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "is not a directory" in err[0] and "not a csp run directory" in err[1]
    assert "--within" in err[2] and "not a csp run directory" in err[3]


TINY = """name: tiny
elements: [Cu, Pd]
candidates: {enumerate: {lattices: [fcc], max_atoms: 2}, prototypes: false}
screening: {stages: [{level: 6}], training: {max_iter: 50}}
"""


@pytest.mark.slow
def test_report_export_status_of_a_real_campaign(tmp_path, capsys):
    """A tiny real campaign (EMT): its report directory holds the report and the export; status says finished."""
    import ase.db

    from csp.mtp.io import read_mtp

    search = tmp_path / "tiny.yaml"
    search.write_text(TINY)
    run = tmp_path / "run"
    assert main(["run", str(search), "--run-dir", str(run)]) == 0
    report = run / "report"
    doc = json.loads((report / "hull.json").read_text())
    assert {p["formula"] for p in doc["hull_phases"]} >= {"Cu", "Pd"}
    assert [s["stage"] for s in doc["stages"]] == [1] and "stage2_kept" not in doc["counts"]
    assert main(["report", str(run)]) == 0           # the same files again, from `csp report`
    for name in ("report.html", "structures.db", "reference_relaxed.extxyz", "training/training.cfg",
                 "potentials/stage1.mtp", "potentials/stage1.mtp.als"):
        assert (report / name).is_file(), name
    assert read_mtp(report / "potentials" / "stage1.mtp").elements == ["Cu", "Pd"]
    with ase.db.connect(str(report / "structures.db")) as db:
        assert db.count() == doc["counts"]["reference_relaxations"] - doc["counts"]["reference_failures"]
    html = (report / "report.html").read_text()
    assert '<table id="stages">' in html and "stage 2" not in html
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "state: finished" in out and "Cu Fm-3m" in out
