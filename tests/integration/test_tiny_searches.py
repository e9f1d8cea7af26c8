"""The smallest searches (fcc ≤ 2 atoms, level 6, 2 folds, 4 initial single points, 4 per round,
4 rounds) finish with a hull holding both elements and never repeat a reference single point —
with EMT (fast) and with real DFT (GPAW, slow; `runs/cu-au-gpaw-tiny.yaml`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from csp.campaign.store import CampaignStore, structure_hash

ROOT = Path(__file__).resolve().parents[2]

TWIN = """name: cu-au-tiny
elements: [Cu, Au]
candidates: {enumerate: {lattices: [fcc], max_atoms: 2}, prototypes: false}
reference: {calculator: emt}
screening:
  stages: [{level: 6}]
  active_learning: {initial_training: 4, max_selected: 4, max_rounds: 4}
  training: {max_iter: 200, cv_folds: 2}
  audit: {min_size: 4, max_rounds: 1}
"""


def run(search: Path, run_dir: Path, *launcher: str) -> None:
    cmd = [*launcher, sys.executable, "-m", "csp", "run", str(search), "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def check(run_dir: Path) -> None:
    with CampaignStore(run_dir) as store:
        assert store.step_done("hull")
        hull = store.get_meta("hull")
        present = {el for row in hull for el, x in row["composition"].items() if x > 0}
        assert present == {"Cu", "Au"}
        sps = [r for r in store.reference_calls("single_point") if r.atoms is not None]
        hashes = [structure_hash(r.atoms) for r in sps]
        assert len(hashes) == len(set(hashes)), "a reference single point was computed twice"


def test_tiny_emt_search_finishes(tmp_path):
    search = tmp_path / "tiny.yaml"
    search.write_text(TWIN)
    run(search, tmp_path / "run")
    check(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.gpaw
def test_tiny_gpaw_search_finishes(tmp_path):
    pytest.importorskip("gpaw")
    run(ROOT / "runs" / "cu-au-gpaw-tiny.yaml", tmp_path / "run")
    check(tmp_path / "run")
