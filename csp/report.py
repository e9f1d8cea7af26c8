"""The campaign report: `ReportData` (what a campaign produced) and `write_report`.

`write_report(data, out_dir)` writes::

    hull.json        machine-readable summary (schema in the README, key "schema": "csp-hull/1")
    stable/*.cif     every hull phase, symmetrised, named <formula>_<space group>_<id>.cif
    figures/*.png    hull, funnel, parity and learning-curve plots
    report.md        the report in Markdown (links the PNGs)
    report.html      the same, self-contained (PNGs embedded as base64 data URIs)

The hull is built from reference energies only (candidates with `reference_energy`).
Energies: eV/atom in data and hull.json; meV/atom in tables; pressure in GPa.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from csp import plots
from csp.errors import InputError
from csp.hull import DEFAULT_TOLERANCE, Hull, HullEntry, build_hull

SCHEMA = "csp-hull/1"
STAGES = ("generated", "stage1", "stage2", "reference")  # "stage3", ... for longer screenings
SYMPREC = 0.01  # Å, symmetry tolerance for space groups and symmetrised CIFs


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
class Counts:
    """Campaign counts (numbers of structures or calls)."""

    candidates: int = 0
    stage1_relaxed: int = 0
    stage1_kept: int = 0
    stage2_kept: int = 0
    reference_relaxations: int = 0
    reference_single_points: int = 0
    reference_failures: int = 0


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
    sigma: stage name -> σ (cross-validated RMSE, eV/atom) of the stage's final potential."""

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

    def hull(self) -> Hull:
        """Convex hull of the reference-relaxed candidates (raises InputError if impossible)."""
        entries = [HullEntry.from_atoms(c.atoms, id=c.id, energy=c.reference_energy * len(c.atoms))
                   for c in self.candidates if c.reference_energy is not None and c.atoms is not None]
        return build_hull(entries, elements=self.elements, tolerance=self.hull_tolerance)


# -- symmetry and CIFs -----------------------------------------------------------------------
def space_group(atoms: Atoms, symprec: float = SYMPREC) -> tuple[str, int]:
    """International symbol and number of the space group of `atoms` (spglib via pymatgen)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=symprec)
        return sga.get_space_group_symbol(), sga.get_space_group_number()
    except Exception:  # spglib found no cell (e.g. overlapping atoms): report no symmetry
        return "P1", 1


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text.replace("/", "_"))


def write_cif(atoms: Atoms, path: Path, symprec: float = SYMPREC) -> tuple[str, int]:
    """Write the symmetrised (refined conventional) structure as a CIF with its symmetry operations."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = AseAtomsAdaptor.get_structure(atoms)
    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        refined = sga.get_refined_structure()
        symbol, number = sga.get_space_group_symbol(), sga.get_space_group_number()
    except Exception:  # spglib failed: write the structure as it is, without symmetry
        CifWriter(structure).write_file(str(path))
        return "P1", 1
    CifWriter(refined, symprec=symprec).write_file(str(path))
    return symbol, number


# -- the report ------------------------------------------------------------------------------
def _funnel(data: ReportData, n_hull: int | None) -> list[tuple[str, int]]:
    c = data.counts
    steps = [("candidates", c.candidates), ("stage 1 relaxed", c.stage1_relaxed), ("stage 1 kept", c.stage1_kept),
             ("stage 2 kept", c.stage2_kept), ("reference relaxations", c.reference_relaxations)]
    if n_hull is not None:
        steps.append(("hull phases", n_hull))
    return steps


def _parity_pairs(data: ReportData) -> list[tuple[float, float, str]]:
    pairs = []
    for c in data.candidates:
        stage = c.last_mtp_stage()
        if c.reference_energy is not None and stage is not None:
            pairs.append((c.reference_energy, c.mtp_energies[stage], stage))
    return pairs


def write_report(data: ReportData, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write hull.json, stable/*.cif, figures/*.png, report.md and report.html; return their paths."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    stable_dir = out / "stable"
    stable_dir.mkdir(exist_ok=True)
    for old in stable_dir.glob("*.cif"):
        old.unlink()
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
            tmp = stable_dir / f".{_safe(row.id)}.cif.tmp"
            symbol, number = write_cif(atoms, tmp)
            name = f"{_safe(row.formula)}_{_safe(symbol)}_{_safe(row.id)}.cif"
            tmp.replace(stable_dir / name)
            cand = by_id.get(row.id)
            phases.append({"id": row.id, "candidate_id": row.id, "origin": cand.origin if cand else "",
                           "formula": row.formula, "composition": row.composition, "natoms": row.natoms,
                           "energy_per_atom": row.energy_per_atom,
                           "formation_energy_per_atom": row.formation_energy_per_atom,
                           "space_group": symbol, "space_group_number": number,
                           "structure_file": f"stable/{name}"})
    near = [] if hull is None else [
        {"id": r.id, "formula": r.formula, "e_above_hull": r.e_above_hull,
         "formation_energy_per_atom": r.formation_energy_per_atom, "space_group": space_group(hull.entry(r.id).atoms)[0]}
        for r in hull.near_hull() if not r.stable]

    figures: dict[str, bytes] = {}
    hp = plots.hull_plot(data, hull) if hull is not None else None
    if hp:
        figures["hull"] = hp
    figures["funnel"] = plots.funnel_plot(_funnel(data, None if hull is None else len(phases)))
    pp = plots.parity_plot(_parity_pairs(data), data.sigma)
    if pp:
        figures["parity"] = pp
    lp = plots.learning_plot(data.learning_curve)
    if lp:
        figures["learning"] = lp
    paths: dict[str, Path] = {}
    for key, png in figures.items():
        paths[f"figures/{key}"] = out / "figures" / f"{key}.png"
        paths[f"figures/{key}"].write_bytes(png)

    doc = {
        "schema": SCHEMA,
        "name": data.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elements": list(data.elements),
        "reference": {"name": data.reference, "settings": data.reference_settings},
        "hull_tolerance": data.hull_tolerance,
        "hull_phases": phases,
        "near_hull": near,
        "entries": [] if hull is None else [r.as_dict() for r in hull.rows],
        "counts": vars(data.counts).copy(),
        "wall_time": dict(data.stage_seconds),
        "failures": [vars(f).copy() for f in data.failures],
        "notes": notes,
    }
    if data.evolution is not None:
        doc["evolution"] = _evolution_doc(data.evolution, {p["id"] for p in phases})
        ep = plots.evolution_plot(doc["evolution"]["generations"])
        if ep:
            figures["evolution"] = ep
            paths["figures/evolution"] = out / "figures" / "evolution.png"
            paths["figures/evolution"].write_bytes(ep)
    paths["hull.json"] = out / "hull.json"
    paths["hull.json"].write_text(json.dumps(doc, indent=1, default=str))
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_markdown(data, doc, figures))
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_html(data, doc, figures))
    return paths


def _evolution_doc(evo: EvolutionData, final_hull: set[str]) -> dict:
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


# -- text renderings ----------------------------------------------------------------------------
_CAPTIONS = {"hull": "Convex hull", "funnel": "Screening funnel", "parity": "MTP vs reference energies",
             "learning": "Learning curve", "evolution": "Evolutionary search: best fitness per generation"}


def _phase_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    head = ["formula", "space group", "id", "origin", "atoms", "E (eV/atom)", "E_f (meV/atom)", "structure"]
    rows = [[p["formula"], f"{p['space_group']} ({p['space_group_number']})", p["id"], p["origin"], str(p["natoms"]),
             f"{p['energy_per_atom']:.5f}", f"{1000 * p['formation_energy_per_atom']:.1f}", p["structure_file"]]
            for p in doc["hull_phases"]]
    return head, rows


def _count_rows(doc: dict) -> list[list[str]]:
    return [[k.replace("_", " "), f"{v:,}"] for k, v in doc["counts"].items()]


def _time_rows(doc: dict) -> list[list[str]]:
    return [[k, f"{v:.1f}"] for k, v in doc["wall_time"].items()]


def _near_rows(doc: dict) -> list[list[str]]:
    return [[n["formula"], n["space_group"], n["id"], f"{1000 * n['e_above_hull']:.2f}"] for n in doc["near_hull"]]


def _failure_rows(doc: dict) -> list[list[str]]:
    return [[f["id"], f["operation"], f["reason"]] for f in doc["failures"]]


def _settings_text(data: ReportData) -> str:
    return json.dumps(data.reference_settings, sort_keys=True, default=str)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _markdown(data: ReportData, doc: dict, figures: dict[str, bytes]) -> str:
    title = f"csp report: {data.name or '-'.join(data.elements)}"
    parts = [f"# {title}", "",
             f"Elements: {', '.join(data.elements)}. Reference: **{data.reference}** (`{_settings_text(data)}`).",
             f"Created {doc['created']}. Hull from reference energies only; near-hull tolerance "
             f"{1000 * data.hull_tolerance:g} meV/atom.", ""]
    for n in doc["notes"]:
        parts.append(f"> {n}")
    parts += ["", "## Hull phases", ""]
    head, rows = _phase_table(doc)
    parts.append(_md_table(head, rows) if rows else "No hull phases.")
    if doc["near_hull"]:
        parts += ["", "### Near the hull (not vertices)", "",
                  _md_table(["formula", "space group", "id", "E above hull (meV/atom)"], _near_rows(doc))]
    parts += ["", "## Campaign", "", _md_table(["count", "value"], _count_rows(doc))]
    if doc["wall_time"]:
        parts += ["", _md_table(["stage", "wall time (s)"], _time_rows(doc))]
    for key in ("hull", "funnel", "parity", "learning"):
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
    return "\n".join(parts) + "\n"


def _html_table(head: list[str], rows: list[list[str]], table_id: str) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1000px;
color:#222;padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;
font-size:.9em;text-align:left}th{background:#f0f0f0}img{max-width:100%;display:block;margin:.5em 0 1.5em}
code{background:#f5f5f5;padding:0 .2em;font-size:.85em;word-break:break-all}.note{background:#fff7e0;padding:.4em .8em}"""


def _html(data: ReportData, doc: dict, figures: dict[str, bytes]) -> str:
    esc = html.escape
    title = f"csp report: {data.name or '-'.join(data.elements)}"
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>Elements: {esc(', '.join(data.elements))}. Reference: <b>{esc(data.reference)}</b> "
             f"<code>{esc(_settings_text(data))}</code></p>",
             f"<p>Created {esc(doc['created'])}. Hull from reference energies only; near-hull tolerance "
             f"{1000 * data.hull_tolerance:g} meV/atom.</p>"]
    parts += [f'<p class="note">{esc(n)}</p>' for n in doc["notes"]]
    if "hull" in figures:
        parts.append(_img("hull", figures))
    parts.append("<h2>Hull phases</h2>")
    head, rows = _phase_table(doc)
    parts.append(_html_table(head, rows, "hull-phases") if rows else "<p>No hull phases.</p>")
    if doc["near_hull"]:
        parts += ["<h3>Near the hull (not vertices)</h3>",
                  _html_table(["formula", "space group", "id", "E above hull (meV/atom)"], _near_rows(doc), "near-hull")]
    parts += ["<h2>Campaign</h2>", _html_table(["count", "value"], _count_rows(doc), "counts")]
    if doc["wall_time"]:
        parts.append(_html_table(["stage", "wall time (s)"], _time_rows(doc), "wall-time"))
    for key in ("funnel", "parity", "learning"):
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
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _img(key: str, figures: dict[str, bytes]) -> str:
    data = base64.b64encode(figures[key]).decode("ascii")
    return f'<img id="fig-{key}" alt="{_CAPTIONS[key]}" src="data:image/png;base64,{data}">'
