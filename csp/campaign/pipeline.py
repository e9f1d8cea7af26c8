"""The campaign pipeline of a search, on rank 0 (workers serve the task farm):

    generate ─► initial training ─► [evolution] ─► stage 1 (self-learning relaxation, audit,
    window; csp.campaign.stage) ─► stage 2 … ─► reference relaxation of the survivors in order,
    until the hull is certain (csp.campaign.reference_stage) ─► hull (reference energies only)
    ─► report

The optional evolution step (csp.campaign.evolution) adds its finds to the candidates before
stage 1; the initial training set is stored as stage 0 of the training table, where the
evolution's own learning follows it, so every later potential trains on both.

Every step is named in the store and skipped when done, so `csp run` on an existing run
directory resumes; a run directory belongs to one search (a different search is refused).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import time
from typing import Any, Callable

import yaml

from csp.campaign.evolution import EVOLUTION_STAGE, EvolutionStep
from csp.campaign.farm import Farm
from csp.campaign.generate import generate_candidates
from csp.campaign.learn import CampaignContext, diverse_subset
from csp.campaign.progress import progress_factory
from csp.campaign.reference_stage import run_reference_stage
from csp.campaign.references import SINGLE_POINT, Job, run_references
from csp.campaign.stage import Stage
from csp.campaign.store import CampaignStore
from csp.config import Search
from csp.errors import InputError

log = logging.getLogger("csp")


class _TqdmHandler(logging.Handler):
    """Log records on stderr without breaking tqdm progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


FAULT_ENV = "CSP_FAULT_KILL"


class _KillAtMessage(logging.Handler):
    """Fault injection for restart tests: SIGKILL this process right after the `count`-th log
    record containing `text` (set CSP_FAULT_KILL="text" or "text@count"). A kill at a known
    point of the pipeline, independent of how fast the machine is."""

    def __init__(self, spec: str):
        super().__init__()
        text, _, count = spec.rpartition("@") if "@" in spec else (spec, "", "1")
        self.text, self.left = text, max(1, int(count))

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.left -= 1
            if self.left == 0:
                for h in log.handlers:
                    h.flush()
                os.kill(os.getpid(), signal.SIGKILL)


def setup_logging(run_dir, quiet: bool = False) -> None:
    """`csp` logger: INFO to RUN_DIR/csp.log (appending), and to stderr unless quiet."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fh = logging.FileHandler(run_dir / "csp.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    if not quiet:
        sh = _TqdmHandler()
        sh.setFormatter(logging.Formatter("csp: %(message)s"))
        log.addHandler(sh)
    if os.environ.get(FAULT_ENV):
        log.addHandler(_KillAtMessage(os.environ[FAULT_ENV]))
    log.propagate = False


def _search_identity(search: Search) -> dict:
    """The parts of a search that define its results (run_dir and name excluded)."""
    data = yaml.safe_load(search.text) or {}
    return {k: v for k, v in data.items() if k not in ("run_dir", "name")}


class Campaign:
    """One campaign: a search, its store and the task farm (rank 0 only)."""

    def __init__(self, search: Search, farm: Farm, progress: bool = True, quiet: bool = False):
        self.search = search
        self.farm = farm
        self.run_dir = search.run_dir
        self.store = CampaignStore(self.run_dir, create=True)
        setup_logging(self.run_dir, quiet=quiet)
        self.progress = progress_factory(progress and not quiet)
        ident = _search_identity(search)
        old = self.store.get_meta("search")
        if old is None:
            self.store.set_meta("name", search.name)
            self.store.set_meta("search", ident)
            self.store.set_meta("search_text", search.text)
            self.store.set_meta("elements", list(search.elements))
            self.store.set_meta("reference", search.reference.settings())
        else:   # keys that cannot change results (reference timeout, ...) may differ: csp.campaign.identity
            from csp.campaign.identity import changed_keys

            changed = changed_keys(old, ident)
            if changed:
                raise InputError(f"{search.path}: run directory '{self.run_dir}' holds a campaign of a different "
                                 f"search (changed: {', '.join(changed)}); use another run_dir (or restore the "
                                 "original search file)")

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.time()
        out = fn()
        times = self.store.get_meta("stage_seconds", {})
        times[name] = times.get(name, 0.0) + time.time() - t0
        self.store.set_meta("stage_seconds", times)
        # rank 0's peak resident memory so far (MB), after each step: what a pool size costs
        peaks = self.store.get_meta("peak_memory_mb", {})
        peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.store.set_meta("peak_memory_mb", peaks)
        return out

    # steps ----------------------------------------------------------------------------------
    def generate(self) -> None:
        if self.store.step_done("generate"):
            return
        log.info("generating candidates for %s", "-".join(self.search.elements))
        cands = generate_candidates(self.search, log=log.info)
        if not cands:
            raise InputError(f"{self.search.path}: the candidate sources produced no structures")
        with self.store.transaction():
            self.store.add_candidates(cands)
            self.store.mark_step("generate", {"candidates": len(cands)})
        log.info("%d candidates stored", len(cands))

    def initial_training(self) -> None:
        if self.store.step_done("initial_training"):
            return
        al = self.search.screening.active_learning
        ids = diverse_subset(list(self.store.candidate_counts().items()), al.initial_training, self.search.seed)
        jobs = [Job(f"sp:initial:c{cid}", cid, atoms) for cid, atoms in self.store.candidates(ids)]
        log.info("initial training set: reference single points of %d diverse candidates", len(jobs))
        run_references(self.store, self.farm, self.search, jobs, SINGLE_POINT,
                       training=(EVOLUTION_STAGE, 0, "initial"),
                       progress=self.progress)
        if not self.store.training_set():
            failed = [r.reason for r in self.store.reference_calls("single_point") if not r.ok]
            raise InputError(f"{self.search.path}: every reference single point of the initial training set failed "
                             f"({len(failed)} calls, last: {(failed[-1] if failed else 'none ran')[:200]}); check the "
                             f"reference settings and environment (call logs under {self.run_dir / 'reference'}); "
                             "failed calls are not retried, so start again in a new run directory")
        self.store.mark_step("initial_training", {"requested": len(jobs)})

    def evolution(self) -> None:
        """The evolutionary search (when configured): its finds join the candidates."""
        if self.search.candidates.evolution is None or self.store.step_done("evolution"):
            return
        log.info("evolution: level-%d self-learning MTP, population %d", self.search.screening.stages[0].level,
                 self.search.candidates.evolution.settings.population_size)
        EvolutionStep(self.search, self.store, self.farm, self.progress).run()

    @property
    def context(self) -> CampaignContext:
        return CampaignContext(self.search, self.store, self.farm, self.progress)

    def stage(self, index: int) -> None:
        """Stage `index` (1-based): self-learning relaxation, audit, window (csp.campaign.stage)."""
        if self.store.step_done(f"stage{index}/screened"):
            return
        self._timed(f"stage{index}", Stage(self.context, index).run)

    def reference_relaxations(self) -> None:
        """The survivors' reference relaxations, in order, until the hull is certain."""
        if self.store.step_done("reference_relaxed"):
            return
        self._timed("reference", lambda: run_reference_stage(self.context))

    def hull(self) -> list[dict]:
        """The final hull from reference energies only (rows as dicts, hull phases first)."""
        from csp.hull import final_hull

        rows = [r.as_dict() for r in final_hull(self.store, self.search.elements).stable()]
        self.store.set_meta("hull", rows)
        return rows

    def report(self) -> None:
        """(Re)write RUN_DIR/report/ (the same files as `csp report RUN_DIR`)."""
        from csp.report import collect, export_run, write_report

        out = self.run_dir / "report"
        write_report(collect(self.store), out)
        export_run(self.store, out)
        log.info("report written to %s", self.run_dir / "report")

    def run(self) -> list[dict]:
        t0 = time.time()
        self._timed("generate", self.generate)
        self._timed("initial_training", self.initial_training)
        if self.search.candidates.evolution is not None:
            self._timed("evolution", self.evolution)
        for index in range(1, len(self.search.screening.stages) + 1):
            self.stage(index)
        self.reference_relaxations()
        rows = self.hull()
        self.store.mark_step("hull", {"phases": len(rows)})
        self.report()
        log.info("hull phases: %s", ", ".join(f"{r['formula']} (id {r['id']})" for r in rows))
        log.info("campaign finished in %.1f s; counts: %s", time.time() - t0, self.store.counts())
        return rows


def run_campaign(search: Search, farm: Farm, progress: bool = True, quiet: bool = False) -> list[dict]:
    """Run or resume the campaign of `search` (rank 0); returns the hull phases."""
    campaign = Campaign(search, farm, progress=progress, quiet=quiet)
    try:
        return campaign.run()
    finally:
        campaign.store.close()
