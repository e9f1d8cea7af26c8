"""The evolutionary search as a campaign candidate source (the `evolution` step).

    generate ─► initial training ─► EVOLUTION ─► stage 1 ─► … (see csp.campaign.pipeline)

`csp.evolution.evolve` runs on rank 0, seeded with a diverse subset (`population_size`
structures, `diverse_subset`) of the generated candidates. Its `relax` function relaxes each
generation's offspring with the self-learning MTP through the machinery of the screening stages
(`generation_learner`: a `StageLearner` whose `OffspringSink` puts results in the store's
`evolution` table):
batches on the task farm, grade watched at every step, extrapolative snapshots ─► MaxVol
selection ─► reference single points added to the global training set ─► retrain ─► re-relax.
The evolution's potential has the level of stage 1 and lives in the store as "stage 0"
(`EVOLUTION_STAGE`): its rounds continue from generation to generation, its training data
(stage 0 in the training table, after the initial set) also trains stage 1's first potential.
Within a generation all energies come from one potential (the stage rule); across generations
the potential may improve (fitness is a guide; stage 1 re-relaxes everything with one potential).

Everything is stored as it arrives (offspring rows before relaxing, relaxation batches, reference
calls, potentials, the individuals the search accepts, per-generation statistics), so after a
kill `evolve(..., known=...)` replays the search from the store without relaxing again. Replay is
exact: offspring ids are deterministic, the relax function returns what the store holds, and the
soft-mode operator uses the potential recorded for the previous generation.

At the end, the final population and every individual within the stage-1 window
(stage-1 `window` × σ of the evolution's last potential) of the evolution's MTP hull become
candidates (`source: evolution`, lineage in their info) — except seeds (already candidates) and
duplicates of existing candidates — and flow through the stages like any other candidate.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any, Callable

from ase import Atoms

from csp.campaign import model
from csp.campaign.farm import Farm
from csp.campaign.store import CampaignStore, EvolutionRecord
from csp.config import Search
from csp.campaign.learn import CampaignContext, StageLearner, diverse_subset, relaxed_ok
from csp.hull import atom_counts

log = logging.getLogger("csp")

EVOLUTION_STAGE = 0   # potentials and training-set rows of the evolution (and of the initial set)
STEP = "evolution"


class OffspringSink:
    """Results of one generation's loop (items are evolution row keys) into the evolution table;
    its pass rows and snapshots live under the loop key -(generation + 1), so that passes of
    generations never mix."""

    def __init__(self, store: CampaignStore, generation: int, rows: list[int]):
        self.store, self.key = store, -1 - generation
        self.idents = {r.row: r.ident for r in store.offspring(rows=rows)}

    def publish(self, pass_no: int, rows: list[dict]) -> None:
        self.store.set_offspring_results(rows, pass_no)

    def label(self, item: int) -> str:
        return self.idents[item]

    def candidate_id(self, item: int) -> int | None:
        return None


def generation_learner(ctx: CampaignContext, generation: int, start: dict[int, Atoms]) -> StageLearner:
    """The self-learning loop over one generation's structures (row key -> start structure),
    continuing the evolution's potential (rounds before this generation do not count for
    max_rounds)."""
    store = ctx.store
    tag = f"evolution-g{generation}"
    first = f"{tag}/start"
    if not store.step_done(first):
        latest = store.latest_potential(EVOLUTION_STAGE)
        store.mark_step(first, {"round": -1 if latest is None else latest["round"]})
    base = max(0, store.step_info(first)["round"])
    return StageLearner(ctx, OffspringSink(store, generation, list(start)), ctx.search.screening.stages[0].level,
                        start, tag, potential_stage=EVOLUTION_STAGE, round_base=base)


class _CurrentEvaluator:
    """The MTP evaluator the soft-mode operator uses: the evolution's potential as it stood when
    the previous generation closed (recorded per generation, so a replay uses the same one)."""

    def __init__(self) -> None:
        self.fn = None
        self.potential_id: int | None = None

    def set(self, store: CampaignStore, potential_id: int) -> None:
        if potential_id != self.potential_id:
            pot = next(p for p in store.potentials(EVOLUTION_STAGE) if p["id"] == potential_id)
            self.fn = model.evaluator(model.load(pot["mtp"]))
            self.potential_id = potential_id

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class _StoreLineage:
    """LineageSink writing to the store (idempotent, so that a replay may call it again)."""

    def __init__(self, store: CampaignStore, evaluator: _CurrentEvaluator):
        self.store, self.evaluator = store, evaluator

    def add(self, individual) -> None:
        self.store.set_offspring_fields(individual.id, accepted=1)

    def generation_done(self, stats) -> None:
        latest = self.store.latest_potential(EVOLUTION_STAGE)
        pid = self.store.add_generation(stats.generation, latest["id"], asdict(stats))
        self.evaluator.set(self.store, pid)


def _individual(rec: EvolutionRecord):
    from csp.evolution.population import Individual

    atoms = rec.atoms.copy()
    atoms.info = {"id": rec.ident, "operator": rec.operator, "parents": list(rec.parents)}
    return Individual(id=rec.ident, atoms=atoms, energy=float(rec.energy), generation=rec.generation,
                      operator=rec.operator, parents=tuple(rec.parents))


class EvolutionStep:
    """Runs (or resumes) the evolutionary search of a campaign and adds its finds as candidates."""

    def __init__(self, search: Search, store: CampaignStore, farm: Farm,
                 progress: Callable[[str, int], Any] | None = None):
        self.search, self.store, self.farm, self.progress = search, store, farm, progress
        self.config = search.candidates.evolution

    def seeds(self) -> list[Atoms]:
        """`population_size` generated candidates inside the search space, spread over compositions
        and cell sizes (seeded); the search adds missing pure elements itself."""
        space = self.config.space
        usable = [(cid, a) for cid, a in self.store.candidates() if a.info.get("source") != "evolution"
                  and space.admits_seed(a)]
        if not usable:
            raise RuntimeError("evolution: no generated candidate lies in the evolution's search space "
                               "(check candidates.evolution max_atoms / composition)")
        picked = diverse_subset([(c, atom_counts(a)) for c, a in usable], self.config.settings.population_size,
                                self.config.seed)
        by_id = dict(usable)
        return [by_id[c] for c in picked]

    def relax(self, structures: list[Atoms]) -> tuple[list[Atoms | None], list[float | None]]:
        """The search's batched relax function: one generation's new structures -> relaxed
        structures and total energies (None: not relaxed), read back from the store."""
        idents = [a.info["id"] for a in structures]
        gens = {int(i[1:].split("-")[0]) for i in idents}
        if len(gens) != 1:
            raise RuntimeError(f"evolution: one relax call got structures of generations {sorted(gens)}")
        gen = gens.pop()
        rows = self.store.add_offspring(
            (a.info["id"], gen, a.info.get("operator", "?"), a.info.get("parents", []), a.info.get("candidate_id"), a)
            for a in structures)
        step = f"evolution-g{gen}/relaxed"
        if not self.store.step_done(step):
            starts = {r.row: r.start for r in self.store.offspring(rows=list(rows.values()))}
            start = {rows[i]: starts[rows[i]] for i in idents}   # one store read, in offspring order
            ctx = CampaignContext(self.search, self.store, self.farm, self.progress)
            state = generation_learner(ctx, gen, start).converge()
            self.store.mark_step(step, {"structures": len(start), "round": state.round})
        recs = {r.ident: r for r in self.store.offspring(generation=gen)}
        out_atoms, out_e = [], []
        for i, given in zip(idents, structures):
            r = recs[i]
            ok = r.status is not None and relaxed_ok(r.status) and r.energy is not None and r.atoms is not None
            out_atoms.append(r.atoms if ok else given)
            out_e.append(float(r.energy) if ok else None)
        return out_atoms, out_e

    def run(self) -> int:
        """Run or resume the search; returns the number of candidates it added."""
        if self.store.step_done(STEP):
            return int(self.store.step_info(STEP)["added"])
        from csp.evolution.search import evolve

        cfg = self.config
        known = {r.ident: _individual(r) for r in self.store.offspring() if r.accepted}
        if known:
            log.info("evolution: resuming with %d evaluated individuals from the store", len(known))
        evaluator = _CurrentEvaluator()
        result = evolve(self.seeds(), self.relax, cfg.space, cfg.settings, seed=cfg.seed, evaluate=evaluator,
                        species=list(self.search.elements), lineage=_StoreLineage(self.store, evaluator),
                        known=known, log=log.info)
        return self._finish(result)

    def _finish(self, result) -> int:
        """Add the finds as candidates, record the summary and mark the step, in one transaction."""
        pot = self.store.latest_potential(EVOLUTION_STAGE)
        # the evolution's potential is not audited: its training RMSE (or CV σ when configured)
        # sizes the window; its finds are screened again, with an audited σ, by stage 1
        sigma = pot["sigma"] if pot["sigma"] is not None else pot["extra"].get("rmse_energy", 0.0)
        bound = self.search.screening.stages[0].window_sigmas * float(sigma or 0.0)   # eV/atom
        recs = {r.ident: r for r in self.store.offspring()}
        chosen = {ind.id: ind for ind in result.population}
        chosen.update((ind.id, ind) for ind in result.individuals if ind.fitness <= bound and ind.id not in chosen)
        chosen = [ind for ind in chosen.values() if recs[ind.id].seed_candidate is None]
        structures = []
        for ind in chosen:
            atoms = recs[ind.id].atoms.copy()
            atoms.info = {"source": "evolution", "evolution_id": ind.id, "generation": ind.generation,
                          "operator": ind.operator, "parents": list(ind.parents),
                          "fitness": float(ind.fitness),
                          "lineage": [[i, op, list(p)] for i, op, p in result.ancestry(ind.id)]}
            structures.append(atoms)
        structures = self._distinct(structures)
        on_hull = [] if result.hull is None else [r.id for r in result.hull.stable()]
        with self.store.transaction():
            for ind in result.individuals:
                self.store.set_offspring_fields(ind.id, fitness=float(ind.fitness))
            ids = self.store.add_candidates(structures)
            for atoms, cid in zip(structures, ids):
                self.store.set_offspring_fields(atoms.info["evolution_id"], candidate_id=cid)
            self.store.set_meta("evolution", {"stopped": result.stopped, "hull": on_hull, "window": bound,
                                              "population": [ind.id for ind in result.population],
                                              "added": [s.info["evolution_id"] for s in structures]})
            self.store.mark_step(STEP, {"added": len(ids), "generations": len(result.history) - 1,
                                        "individuals": len(result.individuals), "stopped": result.stopped})
        log.info("evolution: %d generations (%s), %d individuals; %d structures added as candidates",
                 len(result.history) - 1, result.stopped, len(result.individuals), len(ids))
        return len(ids)

    def _distinct(self, structures: list[Atoms]) -> list[Atoms]:
        """Drop finds that duplicate an existing candidate or each other (when candidates.dedup)."""
        if not self.search.candidates.dedup or not structures:
            return structures
        from csp.structures.dedup import deduplicate

        existing = [a for _, a in self.store.candidates()]
        groups = deduplicate(existing + structures)
        n = len(existing)
        keep = sorted(min(g) - n for g in groups if min(g) >= n)
        return [structures[i] for i in keep]
