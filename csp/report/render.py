"""The campaign report: `write_report(data, out_dir)` writes::

    hull.json        machine-readable summary (schema in the README, key "schema": "csp-hull/1")
    stable/*.cif     every hull phase, symmetrised, named <formula>_<space group>_<id>.cif
    structures/*.cif one file per distinct structure within `data.within` of the hull (the table's links)
    figures/*.png    hull, funnel, parity, audit and learning-curve plots
    report.md        the report in Markdown (links the PNGs)
    report.html      the same, self-contained (PNGs embedded as base64 data URIs, a few lines of JS
                     to sort the tables)

The hull is built from reference energies only. Energies: eV/atom in data and hull.json;
meV/atom in every table and plot; pressure in GPa.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ase import Atoms

from csp.atomic import atomic_write
from csp.errors import InputError
from csp.hull import Hull
from csp.report import plots
from csp.report.data import ReportData

SCHEMA = "csp-hull/1"
SYMPREC = 0.01  # Å, symmetry tolerance for space groups and symmetrised CIFs


# -- symmetry and structure files --------------------------------------------------------------
def space_group(atoms: Atoms, symprec: float = SYMPREC) -> tuple[str, int]:
    """International symbol and number of the space group of `atoms` (spglib via pymatgen)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from csp.structures import spg

    try:
        with spg.new_error_handling():   # spglib raises (no DeprecationWarning) instead of None
            sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=symprec)
            return sga.get_space_group_symbol(), sga.get_space_group_number()
    except Exception:  # spglib found no cell (e.g. overlapping atoms): report no symmetry
        return "P1", 1


def safe_name(text: str) -> str:
    """A file-name-safe version of a formula, space group or id ('/' becomes '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text.replace("/", "_"))


def structure_name(formula: str, symbol: str, ident: str) -> str:
    """<formula>_<space group>_<id>, the stem of every structure file the report writes."""
    return f"{safe_name(formula)}_{safe_name(symbol)}_{safe_name(ident)}"


def write_cif(atoms: Atoms, path: Path, symprec: float = SYMPREC) -> tuple[str, int]:
    """Write the symmetrised (refined conventional) structure as a CIF with its symmetry
    operations (atomically: `path` is replaced only by a complete file)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from csp.structures import spg

    structure = AseAtomsAdaptor.get_structure(atoms)
    try:
        with spg.new_error_handling():   # spglib raises (no DeprecationWarning) instead of None
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            refined = sga.get_refined_structure()
            symbol, number = sga.get_space_group_symbol(), sga.get_space_group_number()
            text = str(CifWriter(refined, symprec=symprec))   # what CifWriter.write_file writes
    except Exception:  # spglib failed: write the structure as it is, without symmetry
        text, symbol, number = str(CifWriter(structure)), "P1", 1
    with atomic_write(path) as fh:
        fh.write(text)
    return symbol, number


def _replace_dir(directory: Path, pattern: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob(pattern):
        old.unlink()


# -- what the tables hold -------------------------------------------------------------------------
@dataclass
class NearRow:
    """One distinct reference-relaxed structure within `within` of the hull (copies merged)."""

    id: str
    ids: list[str]
    formula: str
    origin: str
    natoms: int
    space_group: str
    space_group_number: int
    e_above_hull: float
    formation_energy_per_atom: float
    stable: bool
    structure_file: str

    def as_dict(self) -> dict:
        return {"id": self.id, "ids": self.ids, "copies": len(self.ids), "formula": self.formula,
                "origin": self.origin, "natoms": self.natoms, "space_group": self.space_group,
                "space_group_number": self.space_group_number, "e_above_hull": self.e_above_hull,
                "formation_energy_per_atom": self.formation_energy_per_atom, "stable": self.stable,
                "structure_file": self.structure_file}


def _near_rows(data: ReportData, hull: Hull, out: Path) -> list[NearRow]:
    """Reference-relaxed structures within data.within of the hull, duplicates merged (the
    lowest-energy copy represents a group), with a symmetrised CIF each under structures/."""
    from csp.structures.dedup import deduplicate

    origin = {c.id: c.origin for c in data.candidates}
    rows = sorted((r for r in hull.rows if r.e_above_hull <= data.within + 1e-12),
                  key=lambda r: (r.e_above_hull, not r.stable, r.formula, r.id))   # a hull vertex represents its copies
    groups = deduplicate([hull.entry(r.id).atoms for r in rows]) if rows else []
    out_dir = out / "structures"
    _replace_dir(out_dir, "*.cif")
    near = []
    for group in groups:
        members = [rows[i] for i in group]
        best = members[0]
        atoms = hull.entry(best.id).atoms
        tmp = out_dir / f".{safe_name(best.id)}.cif.tmp"
        symbol, number = write_cif(atoms, tmp)
        name = structure_name(best.formula, symbol, best.id) + ".cif"
        tmp.replace(out_dir / name)
        near.append(NearRow(id=best.id, ids=[m.id for m in members], formula=best.formula,
                            origin=origin.get(best.id, ""), natoms=best.natoms, space_group=symbol,
                            space_group_number=number, e_above_hull=best.e_above_hull,
                            formation_energy_per_atom=best.formation_energy_per_atom,
                            stable=any(m.stable for m in members), structure_file=f"structures/{name}"))
    return sorted(near, key=lambda n: (n.e_above_hull, n.formula, n.id))


def _funnel(data: ReportData, n_hull: int | None) -> list[tuple[str, int]]:
    c = data.counts
    steps = [("candidates", c.candidates)]
    for s in sorted(c.stages, key=lambda s: s.stage):
        steps += [(f"stage {s.stage} relaxed", s.relaxed), (f"stage {s.stage} kept", s.kept)]
    steps.append(("reference relaxations", c.reference_relaxations))
    if n_hull is not None:
        steps.append(("hull phases", n_hull))
    return steps


def _energy_scale(data: ReportData, hull: Hull | None) -> tuple[Callable[[dict, float], float], str]:
    """Energy per atom (eV) -> meV/atom on a common scale: the formation energy against the
    reference hull's elements when there is a hull, else relative to the lowest reference energy."""
    if hull is not None:
        return (lambda comp, e: 1000 * hull.formation_energy(comp, e)), "formation energy"
    known = [c.reference_energy for c in data.candidates if c.reference_energy is not None]
    known += [p.ref_energy_per_atom for s in data.stages for p in s.audit]
    zero = min(known) if known else 0.0
    return (lambda comp, e: 1000 * (e - zero)), "energy − lowest reference energy"


def _parity_pairs(data: ReportData, scale) -> list[tuple[float, float, str]]:
    pairs = []
    for c in data.candidates:
        stage = c.last_mtp_stage()
        if c.reference_energy is not None and stage is not None and c.atoms is not None:
            comp = c.composition()
            pairs.append((scale(comp, c.reference_energy), scale(comp, c.mtp_energies[stage]), stage))
    return pairs


def _audit_pairs(data: ReportData, scale) -> list[tuple[float, float, str]]:
    pairs = []
    for s in data.stages:
        for p in s.audit:
            comp = p.composition or {}
            if comp:
                pairs.append((scale(comp, p.ref_energy_per_atom), scale(comp, p.mtp_energy_per_atom), f"stage{s.stage}"))
            else:  # without a composition only the error is meaningful: plot it on the reference axis
                pairs.append((1000 * p.ref_energy_per_atom, 1000 * p.mtp_energy_per_atom, f"stage{s.stage}"))
    return pairs


def _finite(value):
    """JSON has no infinity: a non-finite number (e.g. σ of a stage without audit points) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _stage_doc(data: ReportData) -> list[dict]:
    out = []
    for s in data.stages:
        audited = s.audited()
        out.append({"stage": s.stage, "level": s.level, "relaxed": s.relaxed, "kept": s.kept, "sigma": s.sigma,
                    "window": s.window, "window_sigmas": s.window_sigmas, "bound": s.bound,
                    "error_model": dict(s.error_model), "audited": audited,
                    "audit_exceeding_bound": len(s.exceeded()), "passes": s.passes,
                    "mtp_relaxations": s.mtp_relaxations, "rounds": s.rounds, "training_size": s.training_size,
                    "kept_untrusted": s.kept_untrusted})
    return out


# -- the report ------------------------------------------------------------------------------
def write_report(data: ReportData, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write hull.json, stable/*.cif, structures/*.cif, figures/*.png, report.md and
    report.html; return their paths (structure files excluded)."""
    out = Path(out_dir)
    _replace_dir(out / "figures", "*.png")
    stable_dir = out / "stable"
    _replace_dir(stable_dir, "*.cif")
    by_id = {c.id: c for c in data.candidates}
    notes = list(data.notes)
    try:
        hull: Hull | None = data.hull()
    except InputError as exc:
        hull = None
        notes.append(f"No convex hull yet: {exc}.")

    phases = []
    if hull is not None:
        for row in hull.stable():
            atoms = hull.entry(row.id).atoms
            tmp = stable_dir / f".{safe_name(row.id)}.cif.tmp"
            symbol, number = write_cif(atoms, tmp)
            name = structure_name(row.formula, symbol, row.id) + ".cif"
            tmp.replace(stable_dir / name)
            cand = by_id.get(row.id)
            phases.append({"id": row.id, "candidate_id": row.id, "origin": cand.origin if cand else "",
                           "formula": row.formula, "composition": row.composition, "natoms": row.natoms,
                           "energy_per_atom": row.energy_per_atom,
                           "formation_energy_per_atom": row.formation_energy_per_atom,
                           "space_group": symbol, "space_group_number": number,
                           "structure_file": f"stable/{name}"})
    near_rows = _near_rows(data, hull, out) if hull is not None else []
    if hull is None:
        _replace_dir(out / "structures", "*.cif")
    sg_of = {n.id: n.space_group for n in near_rows}
    near = [] if hull is None else [
        {"id": r.id, "formula": r.formula, "e_above_hull": r.e_above_hull,
         "formation_energy_per_atom": r.formation_energy_per_atom,
         "space_group": sg_of.get(r.id) or space_group(hull.entry(r.id).atoms)[0]}
        for r in hull.near_hull() if not r.stable]

    scale, scale_name = _energy_scale(data, hull)
    figures: dict[str, bytes] = {}
    hp = plots.hull_plot(data, hull) if hull is not None else None
    if hp:
        figures["hull"] = hp
    figures["funnel"] = plots.funnel_plot(_funnel(data, None if hull is None else len(phases)))
    pp = plots.parity_plot(_parity_pairs(data, scale), {k: (v, "±σ") for k, v in data.sigma.items()},
                           title="MTP vs reference (reference-relaxed structures)", quantity=scale_name)
    if pp:
        figures["parity"] = pp
    bounds = {f"stage{s.stage}": (s.bound, "±bound") for s in data.stages if s.bound}
    ap = plots.parity_plot(_audit_pairs(data, scale), bounds, title="Audit: MTP vs reference at the audited "
                           "structures", quantity=scale_name)
    if ap:
        figures["audit"] = ap
    lp = plots.learning_plot(data.learning_curve)
    if lp:
        figures["learning"] = lp

    doc = {
        "schema": SCHEMA,
        "name": data.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elements": list(data.elements),
        "reference": {"name": data.reference, "settings": data.reference_settings},
        "hull_tolerance": data.hull_tolerance,
        "hull_phases": phases,
        "near_hull": near,
        "within": data.within,
        "structures": [n.as_dict() for n in near_rows],
        "entries": [] if hull is None else [r.as_dict() for r in hull.rows],
        "counts": data.counts.as_dict(),
        "stages": _stage_doc(data),
        "skipped_survivors": [vars(s).copy() for s in data.skipped],
        "stop_reason": data.stop_reason,
        "reference_stage": dict(data.reference_stage),
        "wall_time": dict(data.stage_seconds),
        "failures": [vars(f).copy() for f in data.failures],
        "notes": notes,
    }
    if data.evolution is not None:
        doc["evolution"] = _evolution_doc(data.evolution, {p["id"] for p in phases})
        ep = plots.evolution_plot(doc["evolution"]["generations"])
        if ep:
            figures["evolution"] = ep
    paths: dict[str, Path] = {}
    for key, png in figures.items():
        paths[f"figures/{key}"] = out / "figures" / f"{key}.png"
        with atomic_write(paths[f"figures/{key}"], "wb") as fh:
            fh.write(png)
    texts = {"hull.json": json.dumps(_finite(doc), indent=1, default=str, allow_nan=False),
             "report.md": _markdown(data, doc, figures),
             "report.html": _html(data, doc, figures)}
    for name, text in texts.items():   # each replaced whole: a reader sees the old or the new file
        paths[name] = out / name
        with atomic_write(paths[name]) as fh:
            fh.write(text)
    return paths


def _evolution_doc(evo, final_hull: set[str]) -> dict:
    """hull.json's `evolution` key (schema in the README)."""
    operators: dict[str, dict[str, int]] = {}
    for st in evo.structures:
        row = operators.setdefault(st["operator"].split(":")[0], {"structures": 0, "relaxed": 0,
                                                                   "on_evolution_hull": 0, "on_final_hull": 0})
        row["structures"] += 1
        row["relaxed"] += st["fitness"] is not None
        row["on_evolution_hull"] += st["id"] in evo.hull
        row["on_final_hull"] += st["candidate"] is not None and str(st["candidate"]) in final_hull
    gens = [{"generation": g["generation"],
             "best_fitness": g["best_fitness"] if g["best_fitness"] is not None and g["best_fitness"] < 1e300 else None, "new": g["n_new"],
             "failed_relaxations": g["n_failed_relax"], "operator_failures": g["n_operator_failures"],
             "operators": g["operators"], "hull_changed": g["hull_changed"],
             "hull": [{"formula": f, "id": i, "formation_energy_per_atom": e} for f, i, e in g["hull"]]}
            for g in evo.generations]
    return {"generations": gens, "stopped": evo.stopped, "structures": len(evo.structures),
            "candidates": sum(1 for st in evo.structures if st["candidate"] is not None and not st["seed"]),
            "evolution_hull": list(evo.hull), "operators": operators,
            "hull_lineage": {cid: lin for cid, lin in evo.lineage.items() if cid in final_hull}}


def _evolution_rows(doc: dict) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """(per generation, per operator, lineage of final hull phases) table rows."""
    evo = doc["evolution"]
    gens = [[str(g["generation"]), str(g["new"]), str(g["failed_relaxations"]),
             "-" if g["best_fitness"] is None else f"{1000 * g['best_fitness']:.1f}",
             "yes" if g["hull_changed"] else "no", ", ".join(h["formula"] for h in g["hull"])]
            for g in evo["generations"]]
    ops = [[name, str(r["structures"]), str(r["relaxed"]), str(r["on_evolution_hull"]), str(r["on_final_hull"])]
           for name, r in sorted(evo["operators"].items())]
    formula = {p["id"]: p["formula"] for p in doc["hull_phases"]}
    lineage = [[formula.get(cid, ""), cid, "; ".join(f"{i} ({op}{': ' + ', '.join(par) if par else ''})"
                                                       for i, op, par in lin)]
               for cid, lin in evo["hull_lineage"].items()]
    return gens, ops, lineage


_EVO_HEADS = (["generation", "new", "failed relaxations", "best (meV/atom above hull)", "hull moved", "hull"],
              ["operator", "structures", "relaxed", "on evolution hull", "on final hull"],
              ["formula", "candidate", "lineage: structure (operator: parents); ancestors"])
_EVO_TEXT = ("Evolutionary search: {n} structures in {g} generations (stopped: {stopped}); {c} of them joined "
             "the candidates. Fitness: energy above the evolution's own MTP hull; 'on final hull': the "
             "structure's candidate is a phase of the reference hull.")


# -- table contents -------------------------------------------------------------------------------
_CAPTIONS = {"hull": "Convex hull", "funnel": "Screening funnel", "parity": "MTP vs reference energies",
             "audit": "Audit points: MTP vs reference", "learning": "Learning curve",
             "evolution": "Evolutionary search: best fitness per generation"}


class Cell(str):
    """A table cell whose text sorts by a number (`value`), e.g. '12.3' or '-'."""

    value: float | None

    def __new__(cls, text: str, value: float | None = None):
        obj = super().__new__(cls, text)
        obj.value = value
        return obj

    @classmethod
    def mev(cls, ev: float | None, digits: int = 1) -> "Cell":
        if ev is None:
            return cls("-")
        if not math.isfinite(ev):
            return cls("∞" if ev > 0 else "-")
        mev = round(1000 * ev, digits) + 0.0   # no "-0.0"
        return cls(f"{mev:.{digits}f}", 1000 * ev)

    @classmethod
    def count(cls, n: int | None) -> "Cell":
        return cls("-" if n is None else f"{n:,}", n)


@dataclass
class Link:
    """A table cell that links a file of the report directory."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text


def _phase_table(doc: dict) -> tuple[list[str], list[list]]:
    head = ["formula", "space group", "id", "origin", "atoms", "E_f (meV/atom)", "structure"]
    rows = [[p["formula"], f"{p['space_group']} ({p['space_group_number']})", p["id"], p["origin"],
             Cell.count(p["natoms"]), Cell.mev(p["formation_energy_per_atom"]),
             Link(p["structure_file"], p["structure_file"])]
            for p in doc["hull_phases"]]
    return head, rows


_STRUCT_HEAD = ["formula", "space group", "above hull", "E_f", "atoms", "copies", "id", "origin", "copies' ids",
                "file"]


def _structure_rows(doc: dict) -> list[list]:
    return [[s["formula"], f"{s['space_group']} ({s['space_group_number']})", Cell.mev(s["e_above_hull"], 2),
             Cell.mev(s["formation_energy_per_atom"]), Cell.count(s["natoms"]), Cell.count(s["copies"]), s["id"],
             s["origin"], ", ".join(s["ids"][1:]), Link(Path(s["structure_file"]).name, s["structure_file"])]
            for s in doc["structures"]]


def _count_rows(doc: dict) -> list[list]:
    return [[k.replace("_", " "), Cell.count(v)] for k, v in doc["counts"].items()]


def _time_rows(doc: dict) -> list[list]:
    return [[k, Cell(f"{v:.1f}", v)] for k, v in doc["wall_time"].items()]


def _near_hull_rows(doc: dict) -> list[list]:
    return [[n["formula"], n["space_group"], n["id"], Cell.mev(n["e_above_hull"], 2)] for n in doc["near_hull"]]


def _failure_rows(doc: dict) -> list[list]:
    return [[f["id"], f["operation"], f["reason"]] for f in doc["failures"]]


_STAGE_ROWS = [("MTP level", "level"), ("relaxed", "relaxed"), ("kept", "kept"),
               ("σ (meV/atom)", "sigma"), ("window (σ)", "window_sigmas"), ("window (meV/atom)", "window"),
               ("error bound (meV/atom)", "bound"), ("kept: relaxation broken by extrapolation", "kept_untrusted"),
               ("error model: σ, 90 % upper bound (meV/atom)", "em:sigma"),
               ("error model: σ estimate (meV/atom)", "em:sigma_estimate"), ("error model: RMSE (meV/atom)", "em:rmse"),
               ("error model: 95th percentile (meV/atom)", "em:q95"), ("error model: max (meV/atom)", "em:max"),
               ("error model: bias (meV/atom)", "em:bias"), ("error model: structures", "em:n"),
               ("audited: RMSE (meV/atom)", "au:rmse"), ("audited: max |error| (meV/atom)", "au:max"),
               ("audited: bias (meV/atom)", "au:bias"), ("audited: structures", "au:n"),
               ("audited: above the bound", "exceeding"), ("relaxation passes", "passes"),
               ("MTP relaxations", "mtp_relaxations"), ("active-learning rounds", "rounds"),
               ("training set (final potential)", "training_size")]
_MEV_KEYS = {"sigma", "sigma_estimate", "window", "bound", "rmse", "q95", "max", "bias"}


def _stage_table(doc: dict) -> tuple[list[str], list[list]]:
    """Quantities as rows, one column per stage that ran; rows nobody recorded are left out."""
    head = ["quantity"] + [f"stage {s['stage']}" for s in doc["stages"]]
    rows = []
    for label, key in _STAGE_ROWS:
        cells = []
        for s in doc["stages"]:
            if key.startswith("em:"):
                value, name = s["error_model"].get(key[3:]), key[3:]
            elif key.startswith("au:"):
                value, name = (s["audited"] or {}).get(key[3:]), key[3:]
            elif key == "exceeding":
                value, name = (s["audit_exceeding_bound"] if s["audited"] and s["bound"] is not None else None), key
            else:
                value, name = s[key], key
            if value is None:
                cells.append(Cell("-"))
            elif name in _MEV_KEYS:
                cells.append(Cell.mev(value))
            elif isinstance(value, float) and not float(value).is_integer():
                cells.append(Cell(f"{value:g}", value))
            else:
                cells.append(Cell.count(int(value)))
        if any(c != "-" for c in cells):
            rows.append([label] + cells)
    return head, rows


def _reference_stage_text(doc: dict) -> str:
    """One sentence on the reference stage's work: relaxed survivors, batches, refits, the bound
    and the largest prediction error seen (empty for stores that did not record them)."""
    r = doc.get("reference_stage") or {}
    if "relaxed" not in r or "refits" not in r:
        return ""
    readmitted = f" (and {r['readmitted']} re-admitted by a widened bound)" if r.get("readmitted") else ""
    return (f"{r['relaxed']} of {r['survivors']} survivors{readmitted} relaxed in {r['batches']} batches, "
            f"{r['refits']} refit{'' if r['refits'] == 1 else 's'} of the potential; bound {1000 * r['bound_used']:.1f} meV/atom (audited "
            f"{1000 * r['bound']:.1f}), largest prediction error {1000 * r['max_prediction_error']:.1f} meV/atom.")


def _skipped_rows(doc: dict) -> list[list]:
    return [[s["candidate_id"], Cell.mev(s["predicted_above_hull"]), s["reason"]] for s in doc["skipped_survivors"]]


def flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as (dotted key, value text) rows: {'a': {'b': 1}} -> [('a.b', '1')];
    lists of mappings are indexed (stages[0].level)."""
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows or [(prefix, "{}")]
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        rows = []
        for i, v in enumerate(value):
            rows += flatten(v, f"{prefix}[{i}]")
        return rows or [(prefix, "[]")]
    if isinstance(value, list):
        return [(prefix, ", ".join(_text(v) for v in value) or "[]")]
    return [(prefix, _text(value))]


def _text(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _settings_rows(data: ReportData) -> list[list[str]]:
    rows = [["reference." + k if k else "reference", v] for k, v in flatten(data.reference_settings)]
    search = {k: v for k, v in data.settings.items() if k != "reference"}
    return [[k, v] for k, v in flatten(search)] + rows


def _stage_text(data: ReportData) -> list[str]:
    """One sentence per stage: what σ and the window were, the audit against the bound."""
    out = []
    for s in data.stages:
        parts = [f"Stage {s.stage}" + (f" (level {s.level})" if s.level else "") + ":"]
        if s.relaxed is not None and s.kept is not None:
            parts.append(f"kept {s.kept:,} of {s.relaxed:,} relaxed structures")
        if s.window is not None and not math.isfinite(s.window):
            parts.append("(no error model: the window was unbounded)")
        elif s.window is not None:
            parts.append(f"within {1000 * s.window:.1f} meV/atom of its MTP hull"
                         + (f" ({s.window_sigmas:g} σ, σ = {1000 * s.sigma:.1f} meV/atom)"
                            if s.sigma and math.isfinite(s.sigma) and s.window_sigmas else ""))
        audited = s.audited()
        if audited:
            parts.append(f"; audited error RMSE {1000 * audited['rmse']:.1f}, max {1000 * audited['max']:.1f} "
                         f"meV/atom over {audited['n']} structures"
                         + (f" vs the bound {1000 * s.bound:.1f} meV/atom"
                            if s.bound is not None and math.isfinite(s.bound) else ""))
        out.append(" ".join(parts).replace(" ;", ";") + ".")
    return out


# -- Markdown ---------------------------------------------------------------------------------------
def _md_cell(x) -> str:
    if isinstance(x, Link):
        return f"[{x.text}]({x.href})"
    return str(x).replace("|", "\\|")


def _md_table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _title(data: ReportData) -> str:
    return f"csp report: {data.name or '-'.join(data.elements)}"


def _within_text(data: ReportData, doc: dict) -> str:
    n = len(doc["structures"])
    copies = sum(s["copies"] for s in doc["structures"])
    return (f"{n} distinct reference-relaxed structures ({copies} with copies) within "
            f"{1000 * data.within:g} meV/atom of the hull (`csp report --within`); copies of one structure are "
            "merged into one row. Energy above the hull and formation energy E_f in meV/atom.")


def _markdown(data: ReportData, doc: dict, figures: dict[str, bytes]) -> str:
    parts = [f"# {_title(data)}", "",
             f"Elements: {', '.join(data.elements)}. Reference: **{data.reference}** (settings at the end).",
             f"Created {doc['created']}. Hull from reference energies only; near-hull tolerance "
             f"{1000 * data.hull_tolerance:g} meV/atom. Energies in meV/atom.", ""]
    for n in doc["notes"]:
        parts.append(f"> {n}")
    if "hull" in figures:
        parts += ["", f"![{_CAPTIONS['hull']}](figures/hull.png)"]
    parts += ["", "## Hull phases", ""]
    head, rows = _phase_table(doc)
    parts.append(_md_table(head, rows) if rows else "No hull phases.")
    if doc["near_hull"]:
        parts += ["", "### Near the hull (not vertices)", "",
                  _md_table(["formula", "space group", "id", "E above hull (meV/atom)"], _near_hull_rows(doc))]
    parts += ["", f"## Structures within {1000 * data.within:g} meV/atom of the hull", ""]
    if doc["structures"]:
        parts += [_within_text(data, doc), "", _md_table(_STRUCT_HEAD, _structure_rows(doc))]
    else:
        parts.append("None (no hull yet)." if not doc["hull_phases"] else "None.")
    parts += ["", "## Campaign", "", _md_table(["count", "value"], _count_rows(doc))]
    if doc["wall_time"]:
        parts += ["", _md_table(["step", "wall time (s)"], _time_rows(doc))]
    if "funnel" in figures:
        parts += ["", f"![{_CAPTIONS['funnel']}](figures/funnel.png)"]
    if doc["stages"]:
        parts += ["", "## Screening stages and error model", ""] + _stage_text(data)
        parts += ["", _md_table(*_stage_table(doc))]
    if "audit" in figures:
        parts += ["", f"![{_CAPTIONS['audit']}](figures/audit.png)"]
    if doc["skipped_survivors"] or doc["stop_reason"]:
        parts += ["", "## Reference relaxation of the survivors", ""]
        if doc["stop_reason"]:
            parts.append(f"Reference relaxations stopped: {doc['stop_reason']}. {_reference_stage_text(doc)}")
        if doc["skipped_survivors"]:
            parts += ["", "### Skipped survivors", "",
                      _md_table(["candidate", "predicted above hull (meV/atom)", "reason"], _skipped_rows(doc))]
    for key in ("parity", "learning"):
        if key in figures:
            parts += ["", f"## {_CAPTIONS[key]}", "", f"![{_CAPTIONS[key]}](figures/{key}.png)"]
    if "evolution" in doc:
        evo = doc["evolution"]
        gens, ops, lineage = _evolution_rows(doc)
        parts += ["", "## Evolutionary search", "",
                  _EVO_TEXT.format(n=evo["structures"], g=len(gens) - 1, stopped=evo["stopped"], c=evo["candidates"]),
                  ""]
        if "evolution" in figures:
            parts += [f"![{_CAPTIONS['evolution']}](figures/evolution.png)", ""]
        parts += [_md_table(_EVO_HEADS[0], gens), "", "### Operators", "", _md_table(_EVO_HEADS[1], ops),
                  "", "### Lineage of hull phases found by evolution", ""]
        parts.append(_md_table(_EVO_HEADS[2], lineage) if lineage else "None.")
    parts += ["", "## Reference failures", ""]
    parts.append(_md_table(["id", "operation", "reason"], _failure_rows(doc)) if doc["failures"] else "None.")
    parts += ["", "## Settings", "", _md_table(["setting", "value"], _settings_rows(data))]
    return "\n".join(parts) + "\n"


# -- HTML -------------------------------------------------------------------------------------------
def _html_cell(x) -> str:
    if isinstance(x, Link):
        return f'<td><a href="{html.escape(x.href)}">{html.escape(x.text)}</a></td>'
    value = getattr(x, "value", None)
    attr = f' data-v="{value!r}"' if value is not None else ""
    return f"<td{attr}>{html.escape(str(x))}</td>"


def _html_table(head: list[str], rows: list[list], table_id: str, sortable: bool = False) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(_html_cell(x) for x in r) + "</tr>" for r in rows)
    cls = ' class="sortable"' if sortable else ""
    return f'<table id="{table_id}"{cls}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;
font-size:.9em;text-align:left}th{background:#f0f0f0}td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}table.sortable td,table.sortable th{white-space:nowrap}table.sortable th:after{content:" \\2195";color:#999}
th[data-dir=asc]:after{content:" \\2191"!important}th[data-dir=desc]:after{content:" \\2193"!important}
img{max-width:100%;display:block;margin:.5em 0 1.5em}.wide{overflow-x:auto}
code{background:#f5f5f5;padding:0 .2em;font-size:.85em;word-break:break-all}.note{background:#fff7e0;padding:.4em .8em}"""

# click a header of a table.sortable: sort by that column (numbers by data-v), again to reverse
_JS = """document.querySelectorAll("table.sortable th").forEach(function(th,i){th.addEventListener("click",function(){
var t=th.closest("table"),b=t.tBodies[0],d=th.dataset.dir==="asc"?-1:1;
t.querySelectorAll("th").forEach(function(h){delete h.dataset.dir});th.dataset.dir=d>0?"asc":"desc";
function k(r){var c=r.cells[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):c.textContent}
Array.from(b.rows).sort(function(x,y){var p=k(x),q=k(y);if(typeof p==="number"&&typeof q==="number")return d*(p-q);
if(typeof p==="number")return -d;if(typeof q==="number")return d;return d*String(p).localeCompare(String(q))})
.forEach(function(r){b.appendChild(r)})})});"""


def _html(data: ReportData, doc: dict, figures: dict[str, bytes]) -> str:
    esc = html.escape
    title = _title(data)
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>Elements: {esc(', '.join(data.elements))}. Reference: <b>{esc(data.reference)}</b> "
             '(<a href="#settings">settings</a>).</p>',
             f"<p>Created {esc(doc['created'])}. Hull from reference energies only; near-hull tolerance "
             f"{1000 * data.hull_tolerance:g} meV/atom. Energies in meV/atom.</p>"]
    parts += [f'<p class="note">{esc(n)}</p>' for n in doc["notes"]]
    if "hull" in figures:
        parts.append(_img("hull", figures))
    parts.append("<h2>Hull phases</h2>")
    head, rows = _phase_table(doc)
    parts.append(_html_table(head, rows, "hull-phases") if rows else "<p>No hull phases.</p>")
    if doc["near_hull"]:
        parts += ["<h3>Near the hull (not vertices)</h3>",
                  _html_table(["formula", "space group", "id", "E above hull (meV/atom)"], _near_hull_rows(doc),
                              "near-hull")]
    parts.append(f'<h2 id="within">Structures within {1000 * data.within:g} meV/atom of the hull</h2>')
    if doc["structures"]:
        within = esc(_within_text(data, doc)).replace("`csp report --within`", "<code>csp report --within</code>")
        parts += [f"<p>{within} Click a column header to sort.</p>",
                  '<div class="wide">' + _html_table(_STRUCT_HEAD, _structure_rows(doc), "structures", True) + "</div>"]
    else:
        parts.append("<p>None (no hull yet).</p>" if not doc["hull_phases"] else "<p>None.</p>")
    parts += ["<h2>Campaign</h2>", _html_table(["count", "value"], _count_rows(doc), "counts")]
    if doc["wall_time"]:
        parts.append(_html_table(["step", "wall time (s)"], _time_rows(doc), "wall-time"))
    if "funnel" in figures:
        parts.append(_img("funnel", figures))
    if doc["stages"]:
        parts += ['<h2 id="stages">Screening stages and error model</h2>']
        parts += [f"<p>{esc(t)}</p>" for t in _stage_text(data)]
        parts.append(_html_table(*_stage_table(doc), "stages"))
    if "audit" in figures:
        parts.append(_img("audit", figures))
    if doc["skipped_survivors"] or doc["stop_reason"]:
        parts.append('<h2 id="survivors">Reference relaxation of the survivors</h2>')
        if doc["stop_reason"]:
            parts.append(f"<p>Reference relaxations stopped: {esc(doc['stop_reason'])}. "
                         f"{esc(_reference_stage_text(doc))}</p>")
        if doc["skipped_survivors"]:
            parts += ['<h3 id="skipped">Skipped survivors</h3>',
                      _html_table(["candidate", "predicted above hull (meV/atom)", "reason"], _skipped_rows(doc),
                                  "skipped", True)]
    for key in ("parity", "learning"):
        if key in figures:
            parts += [f"<h2>{_CAPTIONS[key]}</h2>", _img(key, figures)]
    if "evolution" in doc:
        evo = doc["evolution"]
        gens, ops, lineage = _evolution_rows(doc)
        parts += ['<h2 id="evolution">Evolutionary search</h2>',
                  f"<p>{esc(_EVO_TEXT.format(n=evo['structures'], g=len(gens) - 1, stopped=evo['stopped'], c=evo['candidates']))}</p>"]
        if "evolution" in figures:
            parts.append(_img("evolution", figures))
        parts += [_html_table(_EVO_HEADS[0], gens, "evolution-generations"), "<h3>Operators</h3>",
                  _html_table(_EVO_HEADS[1], ops, "evolution-operators"),
                  "<h3>Lineage of hull phases found by evolution</h3>",
                  _html_table(_EVO_HEADS[2], lineage, "evolution-lineage") if lineage else "<p>None.</p>"]
    parts.append("<h2>Reference failures</h2>")
    parts.append(_html_table(["id", "operation", "reason"], _failure_rows(doc), "failures")
                 if doc["failures"] else "<p>None.</p>")
    parts += ['<h2 id="settings">Settings</h2>', _html_table(["setting", "value"], _settings_rows(data), "settings")]
    parts.append(f"<script>{_JS}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _img(key: str, figures: dict[str, bytes]) -> str:
    data = base64.b64encode(figures[key]).decode("ascii")
    return f'<img id="fig-{key}" alt="{_CAPTIONS[key]}" src="data:image/png;base64,{data}">'
