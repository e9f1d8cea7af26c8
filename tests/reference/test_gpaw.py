"""Real DFT through the `gpaw` backend (slow): single point, relaxation, serial runs under mpirun.

Small cutoff and k-point density keep this within the test budget; production cell
relaxations need ecut >= 500 eV.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ase import units
from ase.build import bulk

from csp.reference import get_reference

pytestmark = pytest.mark.gpaw

FAST = {"calculator": "gpaw", "ecut": 250, "kpoint_density": 2.0, "smearing": 0.1}


def _si2():
    atoms = bulk("Si", "diamond", a=5.55)
    atoms.positions[1] += (0.04, -0.02, 0.03)
    return atoms


@pytest.mark.slow
def test_gpaw_single_point_and_relaxation(tmp_path):
    # single point in this process: forces and stress, σ→0 energy above the free energy
    sp = get_reference({**FAST, "isolation": "inline"}).single_point(_si2(), tmp_path / "sp")
    assert sp.ok, sp.reason
    free = sp.atoms.calc.results["free_energy"]
    assert free < sp.energy < free + 0.05  # E(σ→0) = (E + F)/2 > F for Fermi-Dirac smearing
    np.testing.assert_allclose(sp.forces.sum(axis=0), 0.0, atol=1e-4)  # Newton's third law
    assert np.abs(sp.forces).max() > 0.1  # the displaced atom is pushed back
    assert (tmp_path / "sp" / "attempt-1" / "gpaw.txt").exists()

    # relaxation of positions and cell in a child process (the default isolation for gpaw)
    ref = get_reference({**FAST, "relax": {"fmax": 0.05, "stress_tol": 0.5, "max_steps": 30}})
    assert ref.isolation == "process"
    out = ref.relax(_si2(), tmp_path / "relax")
    assert out.ok and out.converged, out.reason
    assert np.sqrt((out.forces**2).sum(1)).max() <= 0.05
    assert np.abs(out.stress).max() <= 0.5 * units.GPa
    assert out.energy < sp.energy
    a_conv = (4 * out.atoms.get_volume()) ** (1 / 3)  # 2-atom primitive cell = 1/4 cubic cell
    assert a_conv == pytest.approx(5.47, rel=0.015)  # PBE silicon lattice constant
    gpaw_txt = (tmp_path / "relax" / "attempt-1" / "gpaw.txt").read_text()
    assert "Cutoff: 250.0 eV" in gpaw_txt and "Monkhorst-Pack size: [4, 4, 4]" in gpaw_txt  # ceil(2π|b|·2)
    meshes = re.findall(r"Monkhorst-Pack size: (\[.*\])", gpaw_txt)
    assert len(meshes) >= 1 and set(meshes) == {"[4, 4, 4]"}  # one mesh for the whole relaxation
    doc = json.loads((tmp_path / "relax" / "outcome.json").read_text())
    assert doc["ok"] and doc["steps"] == out.steps and doc["settings"]["parameters"]["ecut"] == 250.0


@pytest.mark.slow
@pytest.mark.mpi
def test_gpaw_runs_serially_on_every_rank_under_mpirun(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import json, re, sys
        from mpi4py import MPI
        from ase.build import bulk
        from csp.reference import get_reference
        rank = MPI.COMM_WORLD.rank
        ref = get_reference({{"calculator": "gpaw", "ecut": 150, "kpoint_density": 1.0, "isolation": "inline"}})
        out = ref.single_point(bulk("Al", "fcc", a=4.05), r"{tmp_path}/rank%d" % rank)
        import gpaw.mpi
        text = open(r"{tmp_path}/rank%d/attempt-1/gpaw.txt" % rank).read()
        print(json.dumps({{"rank": rank, "ok": out.ok, "reason": out.reason, "energy": out.energy,
                           "world": gpaw.mpi.world.size, "serial": bool(re.search(r"^cores:\\s+1$", text, re.M))}}))
    """))
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    assert mpirun is not None, "mpirun from the mpich wheel is needed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPAW_MPI")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([mpirun, "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the two ranks print one JSON object each; their lines may interleave on the shared stdout
    rows = sorted((json.loads(m) for m in re.findall(r"\{[^{}]*\}", proc.stdout)), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1]
    assert all(r["ok"] and r["world"] == 2 and r["serial"] for r in rows), rows
    assert rows[0]["energy"] == pytest.approx(rows[1]["energy"], abs=1e-6)


@pytest.mark.slow
def test_gpaw_scf_failure_is_retried_with_the_fallback(tmp_path):
    al = bulk("Al", "fcc", a=4.05)
    section = {"calculator": "gpaw", "ecut": 150, "kpoint_density": 1.0, "isolation": "inline"}
    plain = get_reference(section).single_point(al, tmp_path / "plain")
    retried = get_reference({**section, "maxiter": 3, "fallbacks": [{"maxiter": 300, "mixer_beta": 0.05}]}
                            ).single_point(al, tmp_path / "retried")
    assert plain.ok and plain.attempts == 1
    assert retried.ok and retried.attempts == 2
    assert retried.attempt_reasons[0] == "scf: KohnShamConvergenceError: the electronic loop did not converge"
    assert retried.energy == pytest.approx(plain.energy, abs=2e-3)  # same SCF solution, other mixing
    assert (tmp_path / "retried" / "attempt-1" / "error.txt").exists()
