"""Reference calls on every rank of an MPI job (slow): each rank relaxes its own structure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from ase.build import bulk

from csp.reference import get_reference


def _structure(rank: int):
    atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * rank) * (1, 1, 2)
    atoms.rattle(0.02, seed=rank)
    return atoms


@pytest.mark.slow
@pytest.mark.mpi
def test_every_rank_runs_its_own_calls(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from mpi4py import MPI
        from ase.build import bulk
        from csp.reference import get_reference
        rank = MPI.COMM_WORLD.rank
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * rank) * (1, 1, 2)
        atoms.rattle(0.02, seed=rank)
        row = {{"rank": rank}}
        for iso in ("process", "inline"):
            out = get_reference({{"calculator": "emt", "isolation": iso}}).relax(atoms, r"{tmp_path}/%s%d" % (iso, rank))
            log = open(r"{tmp_path}/%s%d/attempt-1/optimizer.log" % (iso, rank)).read()
            row[iso] = [out.ok, out.energy, out.steps, log.count("BFGS:")]
        print(json.dumps(row))
    """))
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    assert mpirun is not None, "mpirun from the mpich wheel is needed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([mpirun, "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = sorted((json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1]
    for r in rows:
        serial = get_reference("emt").relax(_structure(r["rank"]), tmp_path / f"serial{r['rank']}")
        for iso in ("process", "inline"):
            ok, energy, steps, logged = r[iso]
            assert ok and steps == serial.steps and logged == steps + 1  # every rank wrote its own log
            assert energy == pytest.approx(serial.energy, abs=1e-6)
