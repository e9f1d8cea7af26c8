"""csp.campaign.progress: bars on a terminal, periodic log lines otherwise (mpirun, redirected stderr)."""

from __future__ import annotations

import io

from csp.campaign.progress import BarProgress, LogProgress, duration, fit_callback, progress_factory


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_lines_with_rate_and_eta():
    clock, lines = Clock(), []
    bar = LogProgress("stage 1 relax (pass 0)", 100, lines.append, interval=30, quiet_seconds=5, clock=clock)
    clock.t = 2.0
    bar.update(10)
    assert lines == []                                   # short steps stay quiet
    clock.t = 10.0
    bar.update(10)
    assert lines == ["stage 1 relax (pass 0): 20/100 (20 %), 2/s, ETA 40 s"]
    clock.t = 20.0
    bar.update(20)
    assert len(lines) == 1                               # one line per interval
    clock.t = 41.0
    bar.update(1)
    assert lines[-1].startswith("stage 1 relax (pass 0): 41/100 (41 %), 1/s, ETA 59 s")
    clock.t = 100.0
    bar.update(59)
    bar.close()
    assert lines[-1] == "stage 1 relax (pass 0): 100 done in 1 min 40 s"


def test_quick_steps_log_nothing():
    clock, lines = Clock(), []
    bar = LogProgress("x", 3, lines.append, clock=clock)
    bar.update(3)
    bar.close()
    assert lines == []


def test_training_iterations_with_loss():
    clock, lines = Clock(), []
    bar = LogProgress("stage 2 training", 500, lines.append, interval=10, quiet_seconds=1, clock=clock)
    cb = fit_callback(bar)
    for it in range(1, 51):
        clock.t = 0.5 * it
        cb(it, 1.0 / it)
    assert lines[0] == "stage 2 training: 2/500 (0 %), 2/s, ETA 4 min 09 s, loss 0.5"
    assert lines[-1].startswith("stage 2 training: 42/500") and lines[-1].endswith("loss 0.02381")


def test_factory_chooses_lines_unless_interactive_and_not_mpi(monkeypatch):
    import sys

    lines = []
    monkeypatch.setattr(sys, "stderr", io.StringIO())           # not a terminal
    assert isinstance(progress_factory(True, log=lines.append)("a", 3), LogProgress)
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", tty)
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    bar = progress_factory(True)("a", 3)
    assert isinstance(bar, BarProgress)
    bar.update(1)
    bar.set(3, "loss 1")
    bar.close()
    assert isinstance(progress_factory(False, log=lines.append)("a", 3), LogProgress)
    monkeypatch.setenv("PMI_RANK", "0")                          # under mpirun: lines, never bars
    assert isinstance(progress_factory(True, log=lines.append)("a", 3), LogProgress)


def test_duration():
    assert [duration(s) for s in (0.4, 59, 61, 3599, 7260)] == ["0 s", "59 s", "1 min 01 s", "59 min 59 s", "2 h 01 min"]


def test_fit_reports_its_iterations():
    """The MTP fit's (iteration, loss) callback drives a progress object."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from csp.mtp.contraction import init_mtp
    from csp.mtp.fit import fit

    structs = []
    for k in range(4):
        a = bulk("Cu", "fcc", a=3.55 + 0.03 * k) * (2, 1, 1)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        structs.append(a)
    clock, lines = Clock(), []
    bar = LogProgress("training", 8, lines.append, interval=0, quiet_seconds=0, clock=clock)
    seen = []

    def cb(it, loss):
        clock.t += 1.0
        seen.append((it, loss))
        fit_callback(bar)(it, loss)

    fit(init_mtp(4, ["Cu"], min_dist=1.6, max_dist=4.5, radial_basis_size=4, seed=0), structs, species=["Cu"],
        max_iter=8, callback=cb)
    assert seen and [it for it, _ in seen] == list(range(1, len(seen) + 1)) and np.isfinite(seen[-1][1])
    assert len(lines) == len(seen) and lines[0].startswith("training: 1/8 (12 %)")
