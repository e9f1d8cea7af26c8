"""What the report shows (`ReportData` and its parts, plain dataclasses) and `collect(store)`,
which assembles it from a campaign store — the store itself knows nothing about reports.

Energies are eV/atom here and in hull.json; the renderers show meV/atom.
Newer store contents (per-stage screening details, audit points, skipped survivors) are used
when present; a store written by an older csp simply lacks those sections.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms

from csp.errors import InputError
from csp.hull import DEFAULT_TOLERANCE, Hull, HullEntry, atom_counts, build_hull, final_hull
from csp.relax import USABLE

STAGES = ("generated", "stage1", "stage2", "reference")  # "stage3", ... for longer screenings
DEFAULT_WITHIN = 0.050   # eV/atom: the report's table of structures near the hull
ERROR_MODEL_KEYS = ("sigma", "sigma_estimate", "rmse", "q95", "max", "bias", "n")   # eV/atom but n


@dataclass
class CandidateRecord:
    """One candidate. stage: the last step it reached (see STAGES); atoms: its best structure
    (reference-relaxed when available, else the last MTP-relaxed one, else as generated);
    mtp_energies: stage name -> MTP energy (eV/atom) of its relaxed structure in that stage;
    reference_energy: eV/atom after reference relaxation (None if not relaxed or failed)."""

    id: str
    origin: str
    stage: str
    atoms: Atoms | None = None
    mtp_energies: dict[str, float] = field(default_factory=dict)
    reference_energy: float | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES and not re.fullmatch(r"stage[1-9][0-9]*", self.stage):
            raise ValueError(f"candidate {self.id}: stage {self.stage!r} is not one of {', '.join(STAGES)}, stage<N>")

    def composition(self) -> dict[str, float]:
        comp: dict[str, float] = {}
        for s in self.atoms.get_chemical_symbols() if self.atoms is not None else ():
            comp[s] = comp.get(s, 0.0) + 1.0
        return comp

    def last_mtp_stage(self) -> str | None:
        stages = [s for s in self.mtp_energies if re.fullmatch(r"stage[0-9]+", s)]
        return max(stages, key=lambda s: int(s[5:])) if stages else None

    def best_energy(self) -> float | None:
        """Reference energy if known, else the last stage's MTP energy (eV/atom)."""
        if self.reference_energy is not None:
            return self.reference_energy
        stage = self.last_mtp_stage()
        return None if stage is None else self.mtp_energies[stage]


@dataclass
class StageCounts:
    """One screening stage: structures relaxed with its MTP (converged or out of steps) and kept."""

    stage: int
    relaxed: int = 0
    kept: int = 0


@dataclass
class Counts:
    """Campaign counts (numbers of structures or calls); `stages` one entry per stage that ran."""

    candidates: int = 0
    stages: list[StageCounts] = field(default_factory=list)
    reference_relaxations: int = 0
    reference_single_points: int = 0
    reference_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        """hull.json's `counts`: candidates, stage<N>_relaxed / stage<N>_kept per stage, reference calls."""
        out = {"candidates": self.candidates}
        for s in sorted(self.stages, key=lambda s: s.stage):
            out[f"stage{s.stage}_relaxed"] = s.relaxed
            out[f"stage{s.stage}_kept"] = s.kept
        out.update(reference_relaxations=self.reference_relaxations,
                   reference_single_points=self.reference_single_points,
                   reference_failures=self.reference_failures)
        return out


@dataclass
class LearningRound:
    """One active-learning round: training-set size after it; energy errors in eV/atom."""

    stage: str
    round: int
    training_size: int
    rmse_energy: float | None = None
    sigma: float | None = None


@dataclass
class Failure:
    """A failed reference call: id of the candidate or call, operation, reason (one line)."""

    id: str
    operation: str
    reason: str


@dataclass
class AuditPoint:
    """A structure of a stage whose MTP energy was checked against the reference (eV/atom)."""

    candidate_id: str
    round: int
    mtp_energy_per_atom: float
    ref_energy_per_atom: float
    e_above_mtp_hull: float | None = None
    composition: dict[str, float] = field(default_factory=dict)

    @property
    def error(self) -> float:
        return self.mtp_energy_per_atom - self.ref_energy_per_atom


@dataclass
class StageSummary:
    """One screening stage as the campaign recorded it (eV/atom). window: kept distance from the
    stage's MTP hull; window_sigmas: the same in units of σ; bound: the error bound the screening
    used (absent in older stores); error_model: {rmse, q95, max, bias, n}; audit: audited points."""

    stage: int
    level: int | None = None
    relaxed: int | None = None
    kept: int | None = None
    window: float | None = None
    window_sigmas: float | None = None
    sigma: float | None = None
    bound: float | None = None
    error_model: dict[str, float] = field(default_factory=dict)
    passes: int | None = None
    mtp_relaxations: int | None = None
    rounds: int = 0
    training_size: int | None = None
    audit: list[AuditPoint] = field(default_factory=list)
    over_bound: list[str] | None = None
    kept_untrusted: int | None = None

    def audited(self) -> dict[str, float] | None:
        """RMSE, max |error|, bias and n of the audit points (eV/atom), or None without any."""
        if not self.audit:
            return None
        err = [p.error for p in self.audit]
        n = len(err)
        return {"rmse": (sum(e * e for e in err) / n) ** 0.5, "max": max(abs(e) for e in err),
                "bias": sum(err) / n, "n": n}

    def exceeded(self) -> list[AuditPoint]:
        """Audit points whose error exceeds the stage's bound: those the stage recorded
        (`over_bound`, its own comparison) or, for stores without that record, |error| > bound."""
        if self.over_bound is not None:
            over = set(self.over_bound)
            return [p for p in self.audit if p.candidate_id in over]
        if self.bound is None:
            return []
        return [p for p in self.audit if abs(p.error) > self.bound]


@dataclass
class SkippedSurvivor:
    """A survivor of the last stage that was not relaxed with the reference (eV/atom)."""

    candidate_id: str
    predicted_above_hull: float | None
    reason: str


@dataclass
class EvolutionData:
    """What the campaign's evolutionary search did (absent when it ran none). generations: one
    dict per generation (`csp.evolution.GenerationStats` fields; best_fitness eV/atom above the
    evolution's MTP hull); structures: one dict per structure it made (id, generation, operator,
    parents, candidate: the candidate it became or, for a seed, came from; fitness eV/atom or
    None if the relaxation failed); hull: ids on the evolution's final MTP hull; lineage:
    candidate id -> [[id, operator, parents], ...] back to the seeds; stopped: why it ended."""

    generations: list[dict]
    structures: list[dict]
    hull: list[str] = field(default_factory=list)
    lineage: dict[str, list] = field(default_factory=dict)
    stopped: str = ""


@dataclass
class ReportData:
    """Everything the report shows. Energies eV/atom; stage_seconds: wall time per stage in s;
    sigma: stage name -> σ (cross-validated RMSE, eV/atom) of the stage's final potential;
    settings: the search as written (nested dict, shown as a table); within: eV/atom, the
    distance from the hull up to which reference-relaxed structures are listed; final_hull: the
    hull when the caller built it (`collect` uses `csp.hull.final_hull`), else
    `hull()` builds it from the candidates' reference energies."""

    elements: list[str]
    reference: str
    reference_settings: dict
    candidates: list[CandidateRecord]
    counts: Counts
    stage_seconds: dict[str, float] = field(default_factory=dict)
    learning_curve: list[LearningRound] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    sigma: dict[str, float] = field(default_factory=dict)
    name: str = ""
    hull_tolerance: float = DEFAULT_TOLERANCE
    notes: list[str] = field(default_factory=list)
    evolution: "EvolutionData | None" = None
    settings: dict = field(default_factory=dict)
    stages: list[StageSummary] = field(default_factory=list)
    skipped: list[SkippedSurvivor] = field(default_factory=list)
    stop_reason: str = ""
    reference_stage: dict = field(default_factory=dict)
    within: float = DEFAULT_WITHIN
    final_hull: Hull | None = field(default=None, repr=False)

    def hull(self) -> Hull:
        """Convex hull of the reference-relaxed candidates (raises InputError if impossible)."""
        if self.final_hull is not None:
            return self.final_hull
        entries = [HullEntry.from_atoms(c.atoms, id=c.id, energy=c.reference_energy * len(c.atoms))
                   for c in self.candidates if c.reference_energy is not None and c.atoms is not None]
        return build_hull(entries, elements=self.elements, tolerance=self.hull_tolerance)


# -- from the store ---------------------------------------------------------------------------
def _stage_numbers(store) -> list[int]:
    """Stages that exist: configured in the search, or with results / a screened step."""
    stages = {int(k[5:-len("_relaxed")]) for k in store.counts() if re.fullmatch(r"stage\d+_relaxed", k)}
    search = store.get_meta("search") or {}
    configured = ((search.get("screening") or {}).get("stages")) if isinstance(search, dict) else None
    n_conf = len(configured) if isinstance(configured, list) else 0
    for i in range(1, n_conf + 1):
        if store.step_info(f"stage{i}/screened") is not None or i in stages:
            stages.add(i)
    return sorted(s for s in stages if s > 0)


def _configured_stage(store, index: int) -> dict:
    search = store.get_meta("search") or {}
    stages = (search.get("screening") or {}).get("stages") if isinstance(search, dict) else None
    if isinstance(stages, list) and 0 < index <= len(stages) and isinstance(stages[index - 1], dict):
        return stages[index - 1]
    return {}


def _audit_points(store, stage: int, compositions: dict[str, dict[str, float]]) -> list[AuditPoint]:
    if not hasattr(store, "audit_points"):
        return []
    out = []
    for p in store.audit_points(stage) or []:
        if p.ref_energy_per_atom is None or p.mtp_energy_per_atom is None:   # its reference call failed
            continue
        cid = str(getattr(p, "candidate_id"))
        out.append(AuditPoint(candidate_id=cid, round=int(getattr(p, "round", 0) or 0),
                              mtp_energy_per_atom=float(p.mtp_energy_per_atom),
                              ref_energy_per_atom=float(p.ref_energy_per_atom),
                              e_above_mtp_hull=getattr(p, "e_above_mtp_hull", None),
                              composition=compositions.get(cid, {})))
    return out


def _stage_summary(store, stage: int, pots: list[dict], counts: dict, compositions) -> StageSummary:
    info = store.step_info(f"stage{stage}/screened") or {}
    conf = _configured_stage(store, stage)
    mine = [p for p in pots if p["stage"] == stage]
    last = mine[-1] if mine else None
    sigma = info.get("sigma", last["sigma"] if last else None)
    window = info.get("window", info.get("bound"))   # newer stores: the bound is the window (window_sigmas × σ)
    window_sigmas = info.get("window_sigmas", conf.get("window"))
    if window_sigmas is None and window is not None and sigma:
        window_sigmas = window / sigma
    model = info.get("error_model") or {}
    return StageSummary(
        stage=stage, level=info.get("level", conf.get("level", last["level"] if last else None)),
        relaxed=info.get("relaxed", counts.get(f"stage{stage}_relaxed")),
        kept=info.get("kept", counts.get(f"stage{stage}_kept")),
        window=window, window_sigmas=window_sigmas, sigma=sigma, bound=info.get("bound"),
        error_model={k: model[k] for k in ERROR_MODEL_KEYS if model.get(k) is not None},
        passes=info.get("passes"), mtp_relaxations=info.get("mtp_relaxations"), rounds=len(mine),
        training_size=last["n_train"] if last else None,
        audit=_audit_points(store, stage, compositions),
        over_bound=None if info.get("audit_over_bound") is None else [str(c) for c in info["audit_over_bound"]],
        kept_untrusted=info.get("kept_untrusted"))




def _missing_survivor_notes(store, stages: list[StageSummary], failed_relax: set[int], elements) -> list[str]:
    """Issue #12: survivors of the last stage whose reference relaxation failed, within the last
    stage's window of its MTP hull, may be missing from the final hull."""
    if not stages or not failed_relax:
        return []
    last = stages[-1]
    kept = set(store.kept_ids(last.stage))
    lost = sorted(kept & failed_relax)
    if not lost:
        return []
    entries = [HullEntry.from_atoms(r.atoms, id=str(r.candidate_id), energy=r.energy)
               for r in store.stage_results(last.stage)
               if r.status in USABLE and r.atoms is not None and r.energy is not None]
    try:
        mtp_hull = build_hull(entries, elements=elements)
        above = {row.id: row.e_above_hull for row in mtp_hull.rows}
    except InputError:
        above = {}
    notes = []
    for cid in lost:
        e = above.get(str(cid))
        if e is not None and last.window is not None and e > last.window + 1e-12:
            continue
        from pymatgen.core import Composition

        formula = Composition(store.candidate(cid).get_chemical_formula()).reduced_formula
        where = "n/a" if e is None else f"{1000 * e:.1f} meV/atom"
        notes.append(f"Candidate {cid} ({formula}) survived stage {last.stage} at {where} above the MTP hull "
                     "but its reference relaxation failed: the hull may be missing this structure.")
    return notes


def collect(store, within: float = DEFAULT_WITHIN) -> ReportData:
    """Everything the report shows, from a `csp.campaign.store.CampaignStore` (eV/atom)."""
    elements = list(store.get_meta("elements") or [])
    ref_settings = store.get_meta("reference") or {}
    counts = store.counts()
    stage_numbers = _stage_numbers(store)
    stage_rows = {s: {r.candidate_id: r for r in store.stage_results(s)} for s in stage_numbers}
    relaxations = {r.candidate_id: r for r in store.reference_calls("relax")}
    records, compositions = [], {}
    for cid, atoms in store.candidates():
        stage_name, best, mtp_e = "generated", atoms, {}
        for stage, rows in stage_rows.items():
            r = rows.get(cid)
            if r is None or r.energy_per_atom is None or r.status not in USABLE:
                continue
            mtp_e[f"stage{stage}"] = r.energy_per_atom
            stage_name = f"stage{stage}"
            if r.atoms is not None:
                best = r.atoms
        ref_e = None
        rec = relaxations.get(cid)
        if rec is not None and rec.ok and rec.atoms is not None and rec.energy is not None:
            stage_name, best, ref_e = "reference", rec.atoms, rec.energy / len(rec.atoms)
        compositions[str(cid)] = atom_counts(atoms)
        records.append(CandidateRecord(id=str(cid), origin=str(atoms.info.get("source", "")), stage=stage_name,
                                       atoms=best, mtp_energies=mtp_e, reference_energy=ref_e))
    pots = store.potentials()
    stages = [_stage_summary(store, s, pots, counts, compositions) for s in stage_numbers]
    count_obj = Counts(candidates=counts["candidates"],
                       stages=[StageCounts(s.stage, int(s.relaxed or 0), int(s.kept or 0)) for s in stages],
                       reference_relaxations=counts["reference_relaxations"],
                       reference_single_points=counts["reference_single_points"],
                       reference_failures=counts["reference_failures"])
    curve, sigma = [], {}
    for p in pots:
        # stage 0 holds the evolutionary search's potentials (csp.campaign.evolution)
        name = f"stage{p['stage']}" if p["stage"] > 0 else "evolution"
        curve.append(LearningRound(stage=name, round=p["round"], training_size=p["n_train"],
                                   rmse_energy=p["extra"].get("rmse_energy"), sigma=p["sigma"]))
        if p["sigma"] is not None and p["stage"] > 0:
            sigma[name] = p["sigma"]
    for s in stages:   # the σ the window used, when the stage recorded it (none: an unbounded window)
        if s.sigma is not None and math.isfinite(s.sigma):
            sigma[f"stage{s.stage}"] = s.sigma
        else:
            sigma.pop(f"stage{s.stage}", None)
    calls = store.reference_calls()
    failures = [Failure(id=str(r.candidate_id if r.candidate_id is not None else r.key), operation=r.kind,
                        reason=r.reason) for r in calls if not r.ok]
    failed_relax = {r.candidate_id for r in calls if not r.ok and r.kind == "relax" and r.candidate_id is not None}
    failed_relax -= {cid for cid, r in relaxations.items() if r.ok}
    notes = []
    for s in stages:
        if store.get_meta(f"stage{s.stage}_max_rounds_reached"):
            notes.append(f"Stage {s.stage}: the active-learning loop hit max_rounds with structures "
                         "still extrapolating.")
        if s.over_bound:   # the stage's own comparison (its last audit round)
            notes.append(f"Stage {s.stage}: the audited MTP error of {len(s.over_bound)} structure(s) (candidates "
                         f"{', '.join(s.over_bound)}) exceeded the bound {1000 * s.bound:.1f} meV/atom.")
        elif s.over_bound is None and s.exceeded():
            bad = s.exceeded()
            worst = max(abs(p.error) for p in bad)
            notes.append(f"Stage {s.stage}: {len(bad)} of {len(s.audit)} audited structures have an MTP error "
                         f"above the bound {1000 * s.bound:.1f} meV/atom (worst {1000 * worst:.1f} meV/atom).")
    notes += _missing_survivor_notes(store, stages, failed_relax, elements)
    ref_info = store.step_info("reference_relaxed") or {}
    skipped = [SkippedSurvivor(candidate_id=str(d.get("candidate_id")), predicted_above_hull=d.get("predicted_above_hull"),
                               reason=str(d.get("reason", ""))) for d in ref_info.get("skipped") or []]
    reference_stage = {k: ref_info[k] for k in ("survivors", "readmitted", "relaxed", "batches", "refits", "bound",
                                                "bound_used", "max_prediction_error") if k in ref_info}
    if ref_info.get("bound_used") is not None and ref_info["bound_used"] > ref_info.get("bound", 0.0):
        notes.append(f"Reference stage: a survivor's reference relaxation landed "
                     f"{1000 * ref_info['max_prediction_error']:.1f} meV/atom below its prediction, beyond the audited "
                     f"bound of {1000 * ref_info['bound']:.1f} meV/atom; the bound was widened to that error"
                     + (f", and {ref_info['readmitted']} candidates the last stage's window had dropped within it were"
                        " relaxed too." if ref_info.get("readmitted") else "."))
    evolution = None
    gens = store.generations()
    if gens:
        meta = store.get_meta("evolution") or {}
        structures = [{"id": r.ident, "generation": r.generation, "operator": r.operator,
                       "parents": list(r.parents), "seed": r.seed_candidate is not None,
                       "candidate": r.seed_candidate if r.seed_candidate is not None else r.candidate_id,
                       "fitness": r.fitness if r.accepted else None} for r in store.offspring()]
        lineage = {str(cid): a.info["lineage"] for cid, a in store.candidates()
                   if a.info.get("source") == "evolution" and "lineage" in a.info}
        evolution = EvolutionData(generations=gens, structures=structures, hull=list(meta.get("hull", [])),
                                  lineage=lineage, stopped=str(meta.get("stopped", "running")))
    try:
        hull = final_hull(store, elements) if elements else None
    except InputError:
        hull = None   # write_report states why
    settings: Any = store.get_meta("search") or {}
    return ReportData(elements=elements, reference=str(ref_settings.get("calculator", "")),
                      reference_settings=ref_settings, candidates=records, counts=count_obj,
                      stage_seconds=dict(store.get_meta("stage_seconds") or {}), learning_curve=curve,
                      failures=failures, sigma=sigma, name=str(store.get_meta("name") or ""), notes=notes,
                      evolution=evolution, settings=settings if isinstance(settings, dict) else {},
                      stages=stages, skipped=skipped, stop_reason=str(ref_info.get("stop_reason") or ""),
                      reference_stage=reference_stage, within=within, final_hull=hull)
