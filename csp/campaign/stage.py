"""One screening stage: self-learning relaxation, audit, window.

    converge (csp.campaign.learn) ─► audit round a: held-out reference single points at the
    MTP-relaxed geometry of a sample (csp.campaign.audit) ─► error model σ_a
         ▲                                                   │ σ_a still improving?
         └── learn the audited points, retrain, converge ◄───┘
    ─► window: keep every candidate within bound = window × σ of the stage's MTP hull (plus
       any whose MTP energy cannot be trusted: relaxation broken by extrapolation)

Stage 1 starts from the candidates, stage k > 1 from the structures stage k−1 kept, relaxed by
it. The training set is shared: stage 2's first potential trains on everything learned before,
audits included. Every step is recorded, so a killed stage resumes exactly.
"""

from __future__ import annotations

import logging

from csp.campaign.audit import ErrorModel, audit_sample, error_model, miss_probability, sample_size
from csp.campaign.learn import KINDS, CampaignContext, StageLearner, StageSink, relaxed_ok
from csp.campaign.references import SINGLE_POINT, Job, run_references
from csp.campaign.start import StartStructures, stage_origins, stage_start
from csp.campaign.store import AuditPoint, structure_hash
from csp.relax import BROKEN, STATUS_NAMES

log = logging.getLogger("csp")


class Stage:
    """Screening stage `index` of a campaign (rank 0)."""

    def __init__(self, ctx: CampaignContext, index: int):
        self.ctx, self.index = ctx, index
        self.store, self.search = ctx.store, ctx.search
        self.settings = ctx.search.screening.stages[index - 1]
        self.audit = ctx.search.screening.audit
        self.tag = f"stage{index}"
        # eV/atom: the narrowest window of this stage (coarse for all but the last stage)
        last = index == len(ctx.search.screening.stages)
        self.min_bound = self.audit.min_bound if last else max(self.audit.min_bound, self.audit.min_bound_coarse)

    def run(self) -> None:
        step = f"{self.tag}/screened"
        if self.store.step_done(step):
            return
        start = stage_start(self.store, self.index)
        log.info("stage %d: level-%d MTP on %d structures", self.index, self.settings.level, len(start))
        learner = StageLearner(self.ctx, StageSink(self.store, self.index), self.settings.level, start, self.tag,
                               potential_stage=self.index, polish_range=self._polish_range,
                               polish_items=self._audit_samples, origins=stage_origins(self.store, self.index))
        self._top_up(learner, start)
        learner.converge()
        a = 0
        while True:
            info = self._audit_round(learner, a)
            if not info["continue"]:
                break
            self._learn_audit(learner, a, info)
            learner.converge()
            a += 1
        # the error model of the latest audit that had points (a tiny pool may run out of
        # candidates never audited before)
        for k in range(a, -1, -1):
            measured = self.store.step_info(f"{self.tag}/audit{k}")
            if measured["error_model"]["n"]:
                info = measured
                break
        em = info["error_model"]
        if not em["n"]:   # nothing held out in this stage (a tiny pool): the previous stage's error model
            for k in range(self.index - 1, 0, -1):
                earlier = self.store.step_info(f"stage{k}/screened")
                if earlier and earlier["error_model"]["n"]:
                    em = dict(earlier["error_model"], from_stage=k)
                    log.warning("%s: no held-out candidate left to audit; using stage %d's error model", self.tag, k)
                    break
        sigma = em["sigma"] if em["n"] else float("inf")
        bound = self._bound(em)
        learner.converge()   # re-relax (warm) what the final bound's reach adds, if anything
        final = learner.state()
        latest = learner.latest()
        above = learner.energies_above_hull(latest)
        broken = STATUS_NAMES[BROKEN]
        untrusted = sorted(i for i, r in latest.items() if r.status == broken)
        kept = sorted(set(i for i, d in above.items() if d <= bound) | set(untrusted))
        usable = sum(1 for r in latest.values() if relaxed_ok(r.status))
        passes = learner.passes()
        relax_steps = sum(self.store.step_info(f"{self.tag}/pass{p}/relaxed")["steps"] for p in range(passes))
        counts = {k: 0 for k in KINDS}
        for p in range(passes):
            plan = self.store.step_info(f"{self.tag}/pass{p}/plan")
            for k in counts:
                counts[k] += len(plan.get(k, []))
        audited = [p for p in self.store.audit_points(self.index) if p.error is not None]
        shift = ErrorModel(**{k: v for k, v in em.items() if k != "from_stage"}).shift if em["n"] else None
        over = [p.candidate_id for p in self.store.audit_points(self.index, info["audit_round"])
                if shift is not None and p.error is not None
                and abs(p.error - shift(start.counts(p.candidate_id))) > bound]
        summary = {
            "level": self.settings.level, "start": len(start), "relaxed": usable, "kept": len(kept),
            "window_sigmas": self.settings.window_sigmas, "sigma": sigma, "bound": bound, "error_model": em,
            "miss_probability": miss_probability(self.settings.window_sigmas), "potential_id": final.potential_id,
            "round": final.round, "audited_potential_id": info["potential_id"], "audit_rounds": a + 1, "audit_points": len(audited),
            "audit_over_bound": over, "kept_untrusted": len(untrusted), "passes": passes,
            "mtp_relaxations": counts["relax"] + counts["warm"] + counts["restart"],
            "mtp_relaxations_from_start": counts["relax"], "mtp_warm_relaxations": counts["warm"],
            "mtp_restarts": counts["restart"], "raised_symmetry": sum(1 for r in latest.values() if r.raised),
            "mtp_evaluations": counts["evaluate"],
            "mtp_relaxation_steps": relax_steps,
            "max_rounds_reached": bool(self.store.get_meta(f"{self.tag}_max_rounds_reached", False)),
        }
        with self.store.transaction():
            self.store.set_kept(self.index, kept)
            self.store.mark_step(step, summary)
        log.info("stage %d: %d of %d relaxed structures within %.1f meV/atom (%.1f σ, σ = %.2f meV/atom audited on"
                 " %d held-out relaxed candidates) of the MTP hull%s", self.index, len(kept), usable, 1000 * bound,
                 self.settings.window_sigmas, 1000 * sigma, em["n"],
                 f"; {len(untrusted)} kept because extrapolation broke their relaxation" if untrusted else "")
        if over:
            log.warning("stage %d: %d audited candidates had an error above the bound (%s)", self.index, len(over),
                        ", ".join(f"c{c}" for c in over[:10]))

    def _polish_range(self) -> float:
        """eV/atom above the MTP hull inside which structures are re-relaxed after a retraining:
        nothing but hull vertices while the audits go on (no bound is final yet, and an audit
        measures the error at whatever geometry a structure has, so its σ holds for evaluated
        energies too), then 1.5 × the final bound (everything the window can keep, with a
        margin; outside it a structure keeps its energy evaluated at the geometry of the
        previous potential, an upper bound); `audit.range` if no audit found a held-out
        structure. (Polishing within 1.5 × each intermediate bound re-relaxed 86 % of a
        9,808-candidate pool after a first audit at σ = 5 meV/atom.)"""
        latest = None
        for k in range(self.audit.max_rounds - 1, -1, -1):
            latest = self.store.step_info(f"{self.tag}/audit{k}")
            if latest is not None:
                break
        if latest is None or latest["continue"]:
            return 0.0
        for k in range(latest["audit_round"], -1, -1):
            info = self.store.step_info(f"{self.tag}/audit{k}")
            if info["error_model"]["n"]:
                return 1.5 * self._bound(info["error_model"])
        return self.audit.range

    def _bound(self, em: dict) -> float:
        """eV/atom above the MTP hull that the window keeps, for the audited error model `em`:
        window × σ, never less than the largest error the audit met (a heavy tail the RMSE
        under-states) nor than the stage's floor; infinite without audit points."""
        if not em["n"]:
            return float("inf")
        return max(self.settings.window_sigmas * em["sigma"], em["max"], self.min_bound)

    def _top_up(self, learner: StageLearner, start: StartStructures) -> None:
        """A stage's first potential never trains on fewer configurations than its level has
        basis functions: if the training set is smaller, reference single points of start
        structures (relaxed by the previous stage: near-equilibrium data), spread over
        compositions and, within a composition, lowest above the previous stage's MTP hull
        first (where the next decisions are made, and structures the reference stage will
        likely relax anyway), fill it up."""
        step = f"{self.tag}/top-up"
        if self.store.step_done(step) or learner.latest_round() is not None:
            return
        from csp.campaign.learn import diverse_subset
        from csp.campaign.model import basis_size

        plan = self.store.step_info(f"{self.tag}/top-up/plan")   # recorded: a resume computes the same
        if plan is None:
            need = basis_size(self.settings.level, self.search.elements, self.search.screening.training) \
                - self.store.training_size()
            learned = {r.candidate_id for r in self.store.training_set()}
            pool = [(i, start.counts(i)) for i in start if i not in learned]
            rank = self._previous_above(start) if self.index > 1 else None
            plan = {"ids": diverse_subset(pool, need, self.search.seed + self.index, rank=rank) if need > 0 else []}
            self.store.mark_step(f"{self.tag}/top-up/plan", plan)
        ids = plan["ids"]
        if ids:
            log.info("%s: %d training configurations for a level-%d potential: adding reference single points of"
                     " %d start structures", self.tag, self.store.training_size(), self.settings.level, len(ids))
            structures = start.many(ids)
            jobs = [Job(f"sp:{self.tag}:top-up:c{i}", i, structures[i]) for i in ids]
            run_references(self.store, self.ctx.farm, self.search, jobs, SINGLE_POINT,
                           training=(self.index, 0, f"{self.tag} top-up"), progress=self.ctx.progress)
        self.store.mark_step(step, {"added": len(ids)})

    def _previous_above(self, start: StartStructures) -> dict[int, float]:
        """eV/atom above the previous stage's MTP hull of each start structure (inf if unknown)."""
        from csp.campaign.screen import ScreenEntry, energies_above_hull

        rows = {r.candidate_id: r for r in self.store.stage_results(self.index - 1, structures=False)}
        entries = [ScreenEntry(i, start.counts(i), rows[i].energy_per_atom) for i in start
                   if i in rows and relaxed_ok(rows[i].status) and rows[i].energy_per_atom is not None]
        present = {el for e in entries for el, n in e.composition.items() if n}
        above = energies_above_hull(entries, self.search.elements) if set(self.search.elements) <= present else {}
        return {i: above.get(i, float("inf")) for i in start}

    def _audit_within(self, a: int) -> float:
        """eV/atom above the MTP hull where audit round `a` draws its random part: `audit.range`,
        from the second round on three windows of the previous round (where the window is decided)."""
        previous = self.store.step_info(f"{self.tag}/audit{a - 1}") if a else None
        if previous is None or not previous["error_model"]["n"]:
            return self.audit.range
        return min(self.audit.range, max(3.0 * self.settings.window_sigmas * previous["error_model"]["sigma"],
                                         2.0 * self.min_bound))

    def _draw_audit(self, learner: StageLearner, a: int) -> list[int]:
        """The held-out sample of audit round `a`: never audited before, in any stage, nor taken
        into the training set at its relaxed geometry by a top-up (an audited or top-up point is
        learned at a relaxed geometry, where the next stage relaxes it again)."""
        latest = learner.latest()
        usable = {i: r for i, r in latest.items() if relaxed_ok(r.status) and r.energy_per_atom is not None}
        above = learner.energies_above_hull(usable)
        exclude = {p.candidate_id for k in range(1, self.index + 1) for p in self.store.audit_points(k)}
        for k in range(1, self.index + 1):
            exclude |= set((self.store.step_info(f"stage{k}/top-up/plan") or {"ids": []})["ids"])
        n = sample_size(len(usable), self.audit.min_size, self.audit.fraction, self.audit.max_size)
        return audit_sample(above, n, self._audit_within(a), exclude, seed=self.search.seed + 7919 * self.index + a,
                            strata=self.store.candidate_strata(sorted(above)))

    def _audit_samples(self) -> set[int]:
        """Every candidate drawn for an audit of this stage so far (recorded samples)."""
        out: set[int] = set()
        for k in range(self.audit.max_rounds):
            out |= set((self.store.step_info(f"{self.tag}/audit{k}/sample") or {"ids": []})["ids"])
        return out

    def _audit_round(self, learner: StageLearner, a: int) -> dict:
        """Audit round `a` of the stage's latest potential (recorded; replayed on resume). The
        sample is drawn on the current energies, then re-relaxed (warm) by the potential wherever
        it holds an energy evaluated at an older potential's geometry, so that each point is
        audited where the window will judge it: at its own potential's minimum."""
        step = f"{self.tag}/audit{a}"
        info = self.store.step_info(step)
        if info is not None:
            return info
        chosen = self.store.step_info(f"{step}/sample")
        if chosen is None:
            chosen = {"ids": self._draw_audit(learner, a)}
            self.store.mark_step(f"{step}/sample", chosen)
        ids = chosen["ids"]
        learner.converge()   # polishes the sample (polish_items)
        state = learner.state()
        latest = learner.latest()
        usable = {i: r for i, r in latest.items() if relaxed_ok(r.status) and r.energy_per_atom is not None}
        above = learner.energies_above_hull(usable)
        ids = [i for i in ids if i in usable]
        previous = self.store.step_info(f"{self.tag}/audit{a - 1}") if a else None
        within = self._audit_within(a)
        sampled = self.store.relaxations(learner.sink.key, latest=True, items=ids)   # their relaxed geometry

        jobs = [Job(f"sp:{self.tag}:audit{a}:c{i}", i, sampled[i].atoms) for i in ids]
        log.info("%s audit %d: reference single points of %d held-out relaxed candidates (round-%d potential)",
                 self.tag, a, len(jobs), state.round)
        run_references(self.store, self.ctx.farm, self.search, jobs, SINGLE_POINT, progress=self.ctx.progress)
        points, errors, comps_ok = [], [], []
        for job in jobs:
            rec = self.store.reference_call(job.key) or \
                self.store.reference_call_by_hash(SINGLE_POINT, structure_hash(job.atoms))
            ok = rec is not None and rec.ok and rec.energy is not None
            ref = rec.energy / len(job.atoms) if ok else None
            i = job.candidate_id
            points.append(AuditPoint(self.index, a, i, state.potential_id, None if rec is None else rec.id,
                                     usable[i].energy_per_atom, ref, above[i]))
            if ok:
                errors.append(usable[i].energy_per_atom - ref)
                comps_ok.append(learner.start.counts(i))
        self.store.add_audit(self.index, a, points)
        em = error_model(errors, comps_ok, self.search.elements)
        improving = previous is None or not previous["error_model"]["n"] or \
            em.sigma < self.audit.improvement * previous["error_model"]["sigma"]
        # another round only while it can narrow a window: σ still improving, above its floor,
        # and the window wider than the last stage's floor (a coarse stage keeps auditing below its
        # own floor: its audited points are the near-hull data the next stage learns from — on
        # runs/cu-pd, stopping at the coarse floor took stage 2 from 86 to 442 reference relaxations)
        more = a + 1 < self.audit.max_rounds and em.n > 0 and em.sigma > self.audit.sigma_floor and improving \
            and self.settings.window_sigmas * em.sigma > self.audit.min_bound
        info = {"round": state.round, "potential_id": state.potential_id, "audit_round": a, "n": len(jobs),
                "within": within,
                "error_model": em.as_dict(), "continue": bool(more)}
        self.store.mark_step(step, info)
        log.info("%s audit %d: σ = %.2f meV/atom (90 %% bound of %.2f; raw RMSE %.2f, bias %+.2f, max %.2f) on %d"
                 " points%s", self.tag, a, 1000 * em.sigma, 1000 * em.sigma_estimate, 1000 * em.rmse, 1000 * em.bias,
                 1000 * em.max, em.n,
                 "; learning them and auditing again" if more else "")
        return info

    def _learn_audit(self, learner: StageLearner, a: int, info: dict) -> None:
        """The audited points join the training set; the next round's potential is trained."""
        step = f"{self.tag}/audit{a}/learned"
        if self.store.step_done(step):
            return
        for p in self.store.audit_points(self.index, a):
            if p.reference_call_id is not None and p.ref_energy_per_atom is not None:
                self.store.add_to_training(p.reference_call_id, self.index, info["round"] + 1,
                                           f"{self.tag} audit {a}")
        learner.train(info["round"] + 1, "audit")
        self.store.mark_step(step, {"round": info["round"] + 1})
