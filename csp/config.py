"""The search file (YAML): schema, defaults and validation.

`load_search(path)` reads a search file and returns a frozen `Search`; any mistake raises
`InputError` with one line naming the file, the key (dotted path, e.g.
`screening.stages[1].level`) and what is allowed. Nothing is written while loading.

Units in the file: fmax eV/Å, stress_tol GPa (converted to eV/Å³ in `RelaxSettings.stress_tol`),
distances Å, window in units of σ (the stage potential's cross-validated RMSE).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ase.data import chemical_symbols
from ase.units import GPa

from csp.errors import InputError

LATTICES = ("fcc", "bcc", "hcp", "sc", "diamond")
BUILTIN_CALCULATORS = ("emt", "gpaw", "vasp", "espresso")
MTP_LEVELS = tuple(range(2, 29, 2))
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IMPORT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class EnumerateSettings:
    """Derivative-structure enumeration of parent lattices (atoms per cell, inclusive)."""

    lattices: tuple[str, ...] = ("fcc", "bcc", "hcp")
    max_atoms: int = 4
    min_atoms: int = 1


@dataclass(frozen=True)
class RandomSettings:
    """Random symmetric structures."""

    count: int = 0
    max_atoms: int = 8


@dataclass(frozen=True)
class EvolutionConfig:
    """The evolutionary search (`candidates.evolution`): a `csp.evolution.SearchSpace`, its
    `EvolutionSettings` and the search's own seed (see `csp.evolution.section`)."""

    space: Any
    settings: Any
    seed: int


@dataclass(frozen=True)
class CandidateSettings:
    """Where candidates come from; `prototypes` is `("all",)`, a tuple of names or `()`;
    `evolution` (seeded by the other sources) runs after the initial training."""

    enumerate: EnumerateSettings | None = field(default_factory=EnumerateSettings)
    prototypes: tuple[str, ...] = ("all",)
    random: RandomSettings | None = None
    dedup: bool = True
    max_atoms: int | None = None   # drop candidates with more atoms (any source)
    evolution: EvolutionConfig | None = None


@dataclass(frozen=True)
class RelaxSettings:
    """Relaxation tolerances: fmax in eV/Å, stress_tol in eV/Å³ (given in GPa in the file)."""

    fmax: float = 0.01
    stress_tol: float = 0.1 * GPa
    max_steps: int = 500
    batch_size: int = 64
    optimizer: str = "bfgs"


@dataclass(frozen=True)
class ReferenceSettings:
    """The trusted calculator: `section` is the YAML mapping, `reference` the configured
    `csp.reference.Reference` built from it (relaxation settings in `reference.relax_settings`)."""

    calculator: str
    section: dict
    reference: Any


@dataclass(frozen=True)
class StageSettings:
    """One screening stage: MTP level and the window (in units of σ) kept above the hull."""

    level: int
    window: float = 4.0


@dataclass(frozen=True)
class ActiveLearningSettings:
    """Self-learning loop: grade thresholds, rounds, and how many reference calls per round."""

    select_threshold: float = 2.0
    break_threshold: float = 10.0
    max_rounds: int = 30
    initial_training: int = 20
    max_selected: int = 20


@dataclass(frozen=True)
class TrainingSettings:
    """MTP fitting: weights (MLIP defaults), iterations, cross-validation folds, radial basis."""

    energy_weight: float = 1.0
    force_weight: float = 0.01
    stress_weight: float = 0.001
    max_iter: int = 500
    cv_folds: int = 0   # >= 2: k-fold cross-validation of every potential (diagnostic only)
    min_dist: float = 1.6
    max_dist: float = 5.0
    radial_basis_size: int = 8
    sigma_energy_range: float = 0.5  # eV/atom: σ is measured on configurations this close to the lowest


@dataclass(frozen=True)
class AuditSettings:
    """The audit of a stage potential on its relaxed candidates (csp.campaign.audit): reference
    single points at the MTP-relaxed geometry of `max(min_size, fraction × candidates)` of them
    per round, at most `max_size` (σ from 200 points is known to ±7 %; more only costs); rounds (audit, learn the audited points, retrain) go on while σ drops below
    `improvement` × the previous σ, at most `max_rounds`, or until σ <= `sigma_floor`.
    `range` (eV/atom above the MTP hull): where the first round draws the random part of its
    sample (later rounds: within three windows). `min_bound`
    (eV/atom): the window is never narrower, whatever σ (what the audit at the MTP geometry
    cannot see: the reference relaxation from there, other local minima, relaxation
    tolerances — measured at up to 1.6 meV/atom on Cu-Pt where σ was 0.26 meV/atom)."""

    min_size: int = 20
    fraction: float = 0.02
    max_size: int = 200
    max_rounds: int = 3
    improvement: float = 0.8
    sigma_floor: float = 0.001
    range: float = 0.1
    min_bound: float = 0.003


@dataclass(frozen=True)
class ReferenceStageSettings:
    """The reference relaxation of the survivors (csp.campaign.reference_stage): in order of MTP
    energy above the hull, `batch` at a time (0: automatic, max(8, 2 × ranks)); with
    `early_stop`, survivors predicted above the reference hull by more than the last stage's
    bound are skipped."""

    batch: int = 0
    early_stop: bool = True


@dataclass(frozen=True)
class ScreeningSettings:
    """The MTP screening stages and their shared settings."""

    # stage 1 (cheap) keeps a wider window: its error has heavier tails (a level-10 Cu-Au stage put
    # L1_0 CuAu 6.7 meV/atom above its hull at σ = 0.9 meV/atom), and what it lets through costs
    # only MTP relaxations in stage 2, whose window decides the reference relaxations
    stages: tuple[StageSettings, ...] = (StageSettings(10, 6.0), StageSettings(16, 4.0))
    active_learning: ActiveLearningSettings = field(default_factory=ActiveLearningSettings)
    relax: RelaxSettings = field(default_factory=RelaxSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    reference_stage: ReferenceStageSettings = field(default_factory=ReferenceStageSettings)


@dataclass(frozen=True)
class Search:
    """A validated search file."""

    path: Path
    name: str
    elements: tuple[str, ...]
    seed: int
    run_dir: Path
    candidates: CandidateSettings
    reference: ReferenceSettings
    screening: ScreeningSettings
    text: str = ""

    def as_dict(self) -> dict:
        """The normalised search as plain data (stored with the campaign)."""
        return yaml.safe_load(self.text) or {}


class _Checker:
    """Validation helpers that raise one-line InputErrors naming file and key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> None:
        where = f" key '{key}'" if key else ""
        raise InputError(f"{self.path}:{where} {message}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping with keys {', '.join(allowed)}, got {_show(value)}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                full = f"{key}.{k}" if key else str(k)
                near = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                self.fail(full, f"unknown key{hint}; allowed: {', '.join(allowed)}")
        return value

    def integer(self, value: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer{_range(lo, hi)}, got {_show(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(key, f"expected an integer{_range(lo, hi)}, got {value}")
        return int(value)

    def number(self, value: Any, key: str, lo: float | None = None, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"expected a {'positive ' if positive else ''}number, got {_show(value)}")
        if positive and value <= 0:
            self.fail(key, f"expected a positive number, got {value}")
        if lo is not None and value < lo:
            self.fail(key, f"expected a number >= {lo}, got {value}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_show(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"expected a non-empty string, got {_show(value)}")
        return value.strip()

    def sequence(self, value: Any, key: str) -> list:
        if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            self.fail(key, f"expected a list, got {_show(value)}")
        return list(value)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    return ""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping giving the same key twice (PyYAML keeps the last
    one silently). Keys merged in with `<<:` may still be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:   # an unhashable key: SafeLoader's own error follows
                    continue
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> tuple[Path, str, Any]:
    """Read a YAML file; unreadable files and syntax errors become one-line InputErrors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot read search file '{path}': {reason}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as exc:
        raise InputError(f"{path}: line {exc.line} duplicate key '{exc.key}' (first given on line "
                         f"{exc.first_line}); give each key once") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{path}:{line} YAML syntax error: {problem}") from None
    return path, text, data


def load_search(path: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Search:
    """Load and validate a search file; `run_dir` overrides the file's `run_dir` key."""
    path, text, data = read_yaml(path)
    return parse_search(data, path, text, run_dir=run_dir)


_TOP = ("name", "elements", "seed", "run_dir", "candidates", "reference", "screening")


def parse_search(data: Any, path: Path, text: str = "", run_dir: str | os.PathLike | None = None) -> Search:
    """Validate already-parsed YAML data (see `load_search`)."""
    c = _Checker(path)
    if data is None:
        c.fail("", "the search file is empty; required: elements")
    top = c.mapping(data, "", _TOP)
    if "elements" not in top:
        c.fail("elements", "missing; give the elements of the search, e.g. elements: [Cu, Pd]")
    elements = _elements(c, top["elements"])
    name = c.string(top.get("name", path.stem), "name")
    if not _NAME_RE.match(name):
        c.fail("name", f"expected letters, digits, '.', '_' or '-' (a directory name), got {name!r}")
    seed = c.integer(top.get("seed", 0), "seed", lo=0)
    if run_dir is None:
        if "run_dir" in top:   # relative to the search file's directory, not to the working directory
            run_dir = path.parent / Path(c.string(top["run_dir"], "run_dir")).expanduser()
        else:
            run_dir = Path("runs") / name
    search = Search(
        path=path,
        name=name,
        elements=elements,
        seed=seed,
        run_dir=Path(run_dir),
        candidates=_candidates(c, top.get("candidates", {}), elements, seed),
        reference=_reference(c, top.get("reference")),
        screening=_screening(c, top.get("screening", {})),
        text=text,
    )
    try:   # before anything runs: an element the reference cannot treat is an input error
        search.reference.reference.check_elements(list(elements))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return search


def _elements(c: _Checker, value: Any) -> tuple[str, ...]:
    items = c.sequence(value, "elements")
    if not 1 <= len(items) <= 4:
        c.fail("elements", f"expected 1 to 4 elements, got {len(items)}")
    out = []
    for i, el in enumerate(items):
        if not isinstance(el, str) or el not in chemical_symbols[1:]:
            c.fail(f"elements[{i}]", f"unknown element {_show(el)}; expected a chemical symbol such as Cu")
        if el in out:
            c.fail(f"elements[{i}]", f"element {el} is listed twice")
        out.append(el)
    return tuple(out)


def _candidates(c: _Checker, value: Any, elements: tuple[str, ...], seed: int) -> CandidateSettings:
    sec = c.mapping(value, "candidates", ("enumerate", "prototypes", "random", "dedup", "max_atoms", "evolution"))
    enum: EnumerateSettings | None = EnumerateSettings()
    if "enumerate" in sec:
        enum = _enumerate(c, sec["enumerate"])
    protos: tuple[str, ...] = ("all",)
    if "prototypes" in sec:
        protos = _prototypes(c, sec["prototypes"])
    rnd = None
    if sec.get("random") not in (None, False):
        r = c.mapping(sec["random"], "candidates.random", ("count", "max_atoms"))
        if "count" not in r:
            c.fail("candidates.random.count", "missing; how many random structures to generate")
        rnd = RandomSettings(
            count=c.integer(r["count"], "candidates.random.count", lo=1),
            max_atoms=c.integer(r.get("max_atoms", 8), "candidates.random.max_atoms", lo=1, hi=64),
        )
    dedup = c.boolean(sec.get("dedup", True), "candidates.dedup")
    max_atoms = None
    if sec.get("max_atoms") is not None:
        max_atoms = c.integer(sec["max_atoms"], "candidates.max_atoms", lo=1)
    if enum is None and not protos and rnd is None:
        c.fail("candidates", "no candidate source: enable at least one of enumerate, prototypes, random"
               + (" (evolution needs them as seeds)" if sec.get("evolution") not in (None, False) else ""))
    evo = _evolution(c, sec.get("evolution"), elements, seed)
    return CandidateSettings(enumerate=enum, prototypes=protos, random=rnd, dedup=dedup, max_atoms=max_atoms,
                             evolution=evo)


def _evolution(c: _Checker, value: Any, elements: tuple[str, ...], seed: int) -> EvolutionConfig | None:
    """`candidates.evolution` (false/absent: off; true or a mapping: on). Keys are checked here like
    every other section; values by `csp.evolution.section.from_section`, whose one-line messages
    ('<key>: <problem>') are re-issued with this file's name."""
    if value is None or value is False:
        return None
    from csp.evolution.section import KEYS, from_section

    key = "candidates.evolution"
    if value is not True:
        c.mapping(value, key, KEYS)
    try:
        space, settings, evo_seed = from_section(value, elements, seed, where=key)
    except (InputError, ValueError) as exc:
        where, sep, message = str(exc).partition(": ")
        if sep and where.startswith(key):
            c.fail(where, message)
        c.fail(key, str(exc))
    return EvolutionConfig(space=space, settings=settings, seed=evo_seed)


def _enumerate(c: _Checker, value: Any) -> EnumerateSettings | None:
    if value is False or value is None:
        return None
    key = "candidates.enumerate"
    sec = c.mapping(value, key, ("lattices", "max_atoms", "min_atoms"))
    lattices = EnumerateSettings.lattices
    if "lattices" in sec:
        items = c.sequence(sec["lattices"], f"{key}.lattices")
        if not items:
            c.fail(f"{key}.lattices", f"expected at least one of {', '.join(LATTICES)}")
        for i, lat in enumerate(items):
            if lat not in LATTICES:
                c.fail(f"{key}.lattices[{i}]", f"unknown lattice {_show(lat)}; allowed: {', '.join(LATTICES)}")
        lattices = tuple(dict.fromkeys(items))
    max_atoms = c.integer(sec.get("max_atoms", 4), f"{key}.max_atoms", lo=1, hi=24)
    min_atoms = c.integer(sec.get("min_atoms", 1), f"{key}.min_atoms", lo=1, hi=24)
    if min_atoms > max_atoms:
        c.fail(f"{key}.min_atoms", f"must not exceed max_atoms ({max_atoms}), got {min_atoms}")
    return EnumerateSettings(lattices=lattices, max_atoms=max_atoms, min_atoms=min_atoms)


def _prototypes(c: _Checker, value: Any) -> tuple[str, ...]:
    key = "candidates.prototypes"
    if value is False or value is None:
        return ()
    if value == "all":
        return ("all",)
    if isinstance(value, str):
        c.fail(key, f"expected 'all', false or a list of prototype names, got {_show(value)}")
    items = c.sequence(value, key)
    from csp.structures.prototypes import get_prototype

    names = []
    for i, v in enumerate(items):
        name = c.string(v, f"{key}[{i}]")
        try:
            get_prototype(name)
        except InputError as exc:
            c.fail(f"{key}[{i}]", str(exc))
        names.append(name)
    return tuple(dict.fromkeys(names))


_RELAX_KEYS = ("fmax", "stress_tol", "max_steps", "batch_size", "optimizer")
OPTIMIZERS = ("bfgs", "fire")


def _relax(c: _Checker, value: Any, key: str, default: RelaxSettings) -> RelaxSettings:
    sec = c.mapping(value, key, _RELAX_KEYS)
    return RelaxSettings(
        fmax=c.number(sec.get("fmax", default.fmax), f"{key}.fmax", positive=True),
        stress_tol=c.number(sec.get("stress_tol", default.stress_tol / GPa), f"{key}.stress_tol", positive=True) * GPa,
        max_steps=c.integer(sec.get("max_steps", default.max_steps), f"{key}.max_steps", lo=1),
        batch_size=c.integer(sec.get("batch_size", default.batch_size), f"{key}.batch_size", lo=1),
        optimizer=_choice(c, sec.get("optimizer", default.optimizer), f"{key}.optimizer", OPTIMIZERS),
    )


def _choice(c: _Checker, value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        c.fail(key, f"expected one of {', '.join(allowed)}, got {_show(value)}")
    return value


def _reference(c: _Checker, value: Any) -> ReferenceSettings:
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"calculator": value}
    if not isinstance(value, dict):
        c.fail("reference", f"expected a mapping with key 'calculator', got {_show(value)}")
    section = dict(value)
    calc = c.string(section.get("calculator", "emt"), "reference.calculator")
    if calc not in BUILTIN_CALCULATORS and not _IMPORT_RE.match(calc):
        near = difflib.get_close_matches(calc, BUILTIN_CALCULATORS, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        c.fail("reference.calculator", f"unknown calculator {calc!r}{hint}; allowed: "
               f"{', '.join(BUILTIN_CALCULATORS)} or an import path such as package.module.Class")
    section["calculator"] = calc
    from csp.reference import get_reference

    try:
        reference = get_reference(section, "reference")
    except InputError as exc:
        raise InputError(f"{c.path}: {exc}") from None
    return ReferenceSettings(calculator=calc, section=section, reference=reference)


def _screening(c: _Checker, value: Any) -> ScreeningSettings:
    sec = c.mapping(value, "screening", ("stages", "active_learning", "relax", "training", "audit",
                                         "reference_stage"))
    default = ScreeningSettings()
    stages = default.stages
    if "stages" in sec:
        items = c.sequence(sec["stages"], "screening.stages")
        if not items:
            c.fail("screening.stages", "expected at least one stage, e.g. - {level: 10, window: 4.0}")
        out = []
        for i, st in enumerate(items):
            key = f"screening.stages[{i}]"
            s = c.mapping(st, key, ("level", "window"))
            if "level" not in s:
                c.fail(f"{key}.level", f"missing; allowed MTP levels: {MTP_LEVELS[0]}..{MTP_LEVELS[-1]} (even)")
            level = s["level"]
            if isinstance(level, bool) or not isinstance(level, int) or level not in MTP_LEVELS:
                c.fail(f"{key}.level", f"expected an even MTP level {MTP_LEVELS[0]}..{MTP_LEVELS[-1]}, got {_show(level)}")
            window = c.number(s.get("window", 4.0), f"{key}.window", positive=True)
            out.append(StageSettings(level=int(level), window=window))
        stages = tuple(out)
    al_key = "screening.active_learning"
    a = c.mapping(sec.get("active_learning"), al_key, tuple(ActiveLearningSettings.__dataclass_fields__))
    d = ActiveLearningSettings()
    select = c.number(a.get("select_threshold", d.select_threshold), f"{al_key}.select_threshold", lo=1.0)
    brk = c.number(a.get("break_threshold", d.break_threshold), f"{al_key}.break_threshold", lo=1.0)
    if brk <= select:
        c.fail(f"{al_key}.break_threshold", f"must be greater than select_threshold ({select}), got {brk}")
    al = ActiveLearningSettings(
        select_threshold=select,
        break_threshold=brk,
        max_rounds=c.integer(a.get("max_rounds", d.max_rounds), f"{al_key}.max_rounds", lo=1),
        initial_training=c.integer(a.get("initial_training", d.initial_training), f"{al_key}.initial_training", lo=1),
        max_selected=c.integer(a.get("max_selected", d.max_selected), f"{al_key}.max_selected", lo=1),
    )
    relax = _relax(c, sec.get("relax"), "screening.relax", default.relax)
    tr_key = "screening.training"
    t = c.mapping(sec.get("training"), tr_key, tuple(TrainingSettings.__dataclass_fields__))
    td = TrainingSettings()
    training = TrainingSettings(
        energy_weight=c.number(t.get("energy_weight", td.energy_weight), f"{tr_key}.energy_weight", lo=0.0),
        force_weight=c.number(t.get("force_weight", td.force_weight), f"{tr_key}.force_weight", lo=0.0),
        stress_weight=c.number(t.get("stress_weight", td.stress_weight), f"{tr_key}.stress_weight", lo=0.0),
        max_iter=c.integer(t.get("max_iter", td.max_iter), f"{tr_key}.max_iter", lo=1),
        cv_folds=c.integer(t.get("cv_folds", td.cv_folds), f"{tr_key}.cv_folds", lo=0),
        min_dist=c.number(t.get("min_dist", td.min_dist), f"{tr_key}.min_dist", positive=True),
        max_dist=c.number(t.get("max_dist", td.max_dist), f"{tr_key}.max_dist", positive=True),
        radial_basis_size=c.integer(t.get("radial_basis_size", td.radial_basis_size),
                                    f"{tr_key}.radial_basis_size", lo=2, hi=32),
        sigma_energy_range=c.number(t.get("sigma_energy_range", td.sigma_energy_range),
                                    f"{tr_key}.sigma_energy_range", positive=True),
    )
    if training.max_dist <= training.min_dist:
        c.fail(f"{tr_key}.max_dist", f"must be greater than min_dist ({training.min_dist}), got {training.max_dist}")
    if training.cv_folds == 1:
        c.fail(f"{tr_key}.cv_folds", "expected 0 (off) or at least 2 folds, got 1")
    au_key = "screening.audit"
    u = c.mapping(sec.get("audit"), au_key, tuple(AuditSettings.__dataclass_fields__))
    ud = AuditSettings()
    audit = AuditSettings(
        min_size=c.integer(u.get("min_size", ud.min_size), f"{au_key}.min_size", lo=3),
        fraction=c.number(u.get("fraction", ud.fraction), f"{au_key}.fraction", lo=0.0),
        max_size=c.integer(u.get("max_size", ud.max_size), f"{au_key}.max_size", lo=1),
        max_rounds=c.integer(u.get("max_rounds", ud.max_rounds), f"{au_key}.max_rounds", lo=1),
        improvement=c.number(u.get("improvement", ud.improvement), f"{au_key}.improvement", positive=True),
        sigma_floor=c.number(u.get("sigma_floor", ud.sigma_floor), f"{au_key}.sigma_floor", lo=0.0),
        range=c.number(u.get("range", ud.range), f"{au_key}.range", positive=True),
        min_bound=c.number(u.get("min_bound", ud.min_bound), f"{au_key}.min_bound", lo=0.0),
    )
    rs_key = "screening.reference_stage"
    r = c.mapping(sec.get("reference_stage"), rs_key, tuple(ReferenceStageSettings.__dataclass_fields__))
    rd = ReferenceStageSettings()
    reference_stage = ReferenceStageSettings(
        batch=c.integer(r.get("batch", rd.batch), f"{rs_key}.batch", lo=0),
        early_stop=c.boolean(r.get("early_stop", rd.early_stop), f"{rs_key}.early_stop"),
    )
    return ScreeningSettings(stages=stages, active_learning=al, relax=relax, training=training, audit=audit,
                             reference_stage=reference_stage)
