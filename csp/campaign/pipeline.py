"""The campaign pipeline of a search, on rank 0 (workers serve the task farm):

    generate ─► initial training ─► [evolution] ─► stage 1 (self-learning relaxation) ─► window ─►
    stage 2 … ─► reference relaxation of the survivors ─► hull (reference energies only) ─► report

The optional evolution step (csp.campaign.evolution) adds its finds to the candidates before
stage 1; the initial training set is stored as stage 0 of the training table, where the
evolution's own learning follows it, so every later potential trains on both.

Every step is named in the store and skipped when done, so `csp run` on an existing run
directory resumes; a run directory belongs to one search (a different search is refused).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

import yaml

from csp.campaign.evolution import EVOLUTION_STAGE, EvolutionStep
from csp.campaign.farm import Farm
from csp.campaign.generate import generate_candidates
from csp.campaign.store import CampaignStore
from csp.config import Search
from csp.errors import InputError
from csp.learn import StageLearner, diverse_subset, relaxed_ok, run_references
from csp.screen import ScreenEntry, within_window

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


def progress_factory(enabled: bool) -> Callable[[str, int], Any]:
    """Progress bars (counts, rate, ETA) on stderr; disabled when not wanted or not a terminal."""
    from tqdm import tqdm

    def make(label: str, total: int):
        return tqdm(total=total, desc=label, unit="", disable=None if enabled else True, leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    return make


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
            self.store.set_meta("reference", search.reference.reference.settings())
        elif json.loads(json.dumps(old)) != json.loads(json.dumps(ident)):
            raise InputError(f"{search.path}: run directory '{self.run_dir}' holds a campaign of a different "
                             "search; use another run_dir (or restore the original search file)")

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.time()
        out = fn()
        times = self.store.get_meta("stage_seconds", {})
        times[name] = times.get(name, 0.0) + time.time() - t0
        self.store.set_meta("stage_seconds", times)
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
        cands = self.store.candidates()
        ids = diverse_subset(cands, al.initial_training, self.search.seed)
        by_id = dict(cands)
        jobs = [(f"sp:initial:c{cid}", cid, by_id[cid]) for cid in ids]
        log.info("initial training set: reference single points of %d diverse candidates", len(jobs))
        run_references(self.store, self.farm, self.search, jobs, "single_point",
                       training=(EVOLUTION_STAGE, 0, "initial"),
                       progress=self.progress)
        if not self.store.training_set():
            raise RuntimeError("every reference single point of the initial training set failed")
        self.store.mark_step("initial_training", {"requested": len(jobs)})

    def evolution(self) -> None:
        """The evolutionary search (when configured): its finds join the candidates."""
        if self.search.candidates.evolution is None or self.store.step_done("evolution"):
            return
        log.info("evolution: level-%d self-learning MTP, population %d", self.search.screening.stages[0].level,
                 self.search.candidates.evolution.settings.population_size)
        EvolutionStep(self.search, self.store, self.farm, self.progress).run()

    def stage(self, index: int) -> None:
        """Stage `index` (1-based): self-learning relaxation, then the window."""
        step = f"stage{index}/screened"
        if self.store.step_done(step):
            return
        settings = self.search.screening.stages[index - 1]
        if index == 1:
            start = dict(self.store.candidates())
        else:
            prev = {r.candidate_id: r for r in self.store.stage_results(index - 1)}
            start = {}
            for cid in self.store.kept_ids(index - 1):
                atoms = prev[cid].atoms
                atoms.info.update(self.store.candidate(cid).info)
                start[cid] = atoms
        log.info("stage %d: level-%d MTP on %d structures", index, settings.level, len(start))
        learner = StageLearner(self.search, self.store, self.farm, index, settings.level, start, self.progress)
        state = self._timed(f"stage{index}", learner.run)
        entries = []
        for r in self.store.stage_results(index):
            if r.candidate_id in start and relaxed_ok(r.status) and r.energy_per_atom is not None:
                entries.append(ScreenEntry(r.candidate_id, _composition(r.atoms), r.energy_per_atom))
        window = settings.window * state.sigma
        kept, _ = within_window(entries, self.search.elements, window)
        with self.store.transaction():
            self.store.set_kept(index, kept)
            self.store.mark_step(step, {"relaxed": len(entries), "kept": len(kept), "window": window,
                                        "sigma": state.sigma})
        log.info("stage %d: %d of %d relaxed structures within %.1f meV/atom (%.1f σ) of the MTP hull",
                 index, len(kept), len(entries), 1000 * window, settings.window)

    def reference_relaxations(self) -> None:
        if self.store.step_done("reference_relaxed"):
            return
        last = len(self.search.screening.stages)
        results = {r.candidate_id: r for r in self.store.stage_results(last)}
        jobs = [(f"relax:c{cid}", cid, results[cid].atoms) for cid in self.store.kept_ids(last)]
        log.info("reference relaxation of %d survivors", len(jobs))
        self._timed("reference", lambda: run_references(self.store, self.farm, self.search, jobs, "relax",
                                                        progress=self.progress))
        self.store.mark_step("reference_relaxed", {"relaxations": len(jobs)})

    def hull(self) -> list[dict]:
        """The final hull from reference energies only (rows as dicts, hull phases first)."""
        from csp.hull import HullEntry, build_hull

        entries = []
        for rec in self.store.reference_calls("relax"):
            if rec.ok and rec.atoms is not None:
                entries.append(HullEntry.from_atoms(rec.atoms, id=str(rec.candidate_id), energy=rec.energy))
        hull = build_hull(entries, self.search.elements)
        rows = [r.as_dict() for r in hull.stable()]
        self.store.set_meta("hull", rows)
        return rows

    def report(self) -> None:
        """(Re)write RUN_DIR/report/ (the same files as `csp report RUN_DIR`)."""
        from csp.report import write_report

        write_report(self.store.report_data(), self.run_dir / "report")
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


def _composition(atoms) -> dict[str, int]:
    comp: dict[str, int] = {}
    for s in atoms.get_chemical_symbols():
        comp[s] = comp.get(s, 0) + 1
    return comp


def run_campaign(search: Search, farm: Farm, progress: bool = True, quiet: bool = False) -> list[dict]:
    """Run or resume the campaign of `search` (rank 0); returns the hull phases."""
    campaign = Campaign(search, farm, progress=progress, quiet=quiet)
    try:
        return campaign.run()
    finally:
        campaign.store.close()
