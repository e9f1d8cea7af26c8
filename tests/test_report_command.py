"""`csp report RUN_DIR`: glue between the campaign store and write_report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from csp.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_report import synthetic  # noqa: E402


def test_report_command_writes_the_report(tmp_path, monkeypatch, capsys):
    from csp.campaign.store import CampaignStore

    CampaignStore(tmp_path / "run", create=True).close()
    data = synthetic(n_extra=3)
    monkeypatch.setattr(CampaignStore, "report_data", lambda self: data, raising=False)
    assert main(["report", str(tmp_path / "run")]) == 0
    out = tmp_path / "run" / "report"
    doc = json.loads((out / "hull.json").read_text())
    assert doc["name"] == "cu-au-test" and len(doc["hull_phases"]) == len(list((out / "stable").glob("*.cif")))
    assert (out / "report.html").stat().st_size > 50_000 and "report.html" in capsys.readouterr().out


def test_report_command_bad_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "is not a directory" in err[0] and "not a csp run directory" in err[1]
