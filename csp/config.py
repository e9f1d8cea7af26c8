"""The search file (YAML): schema, defaults and validation.

`load_search(path)` reads a search file and returns a frozen `Search`; any mistake raises
`InputError` with one line naming the file, the key (dotted path, e.g.
`screening.stages[1].level`) and what is allowed: `<file>: key '<key>': <message>` (the format
of `csp.validate`). Nothing is written while loading.

The dataclasses below are the schema: a YAML setting is a field declared with
`csp.validate.setting`, whose default is the only default and whose checks sit beside it.
Allowed names come from the registries they select from (parent lattices:
`csp.structures.lattices.BUILTIN`; calculators: `csp.reference.BACKENDS`; MTP optimizers:
`csp.relax.OPTIMIZERS`).

Units in the file: fmax eV/Å, stress_tol GPa (eV/Å³ inside: `MTPRelaxSettings.stress_tol`),
distances Å, a stage's `window` in units of σ (`StageSettings.window_sigmas`; the bound it
implies, window × σ, is eV/atom), every other energy eV/atom.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from ase.data import chemical_symbols
from ase.units import GPa

from csp.errors import InputError
from csp.reference.core import Reference, get_reference
from csp.relax import OPTIMIZERS
from csp.validate import Section, fail, one_of, read, sequence, setting, show, string

if TYPE_CHECKING:
    from csp.evolution import EvolutionSettings, SearchSpace

MTP_LEVELS = tuple(range(2, 29, 2))   # the levels of MLIP's potential templates
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class EnumerateSettings:
    """Derivative-structure enumeration of parent lattices (atoms per cell, inclusive)."""

    lattices: tuple[str, ...] = setting(("fcc", "bcc", "hcp"))
    max_atoms: int = setting(4, lo=1, hi=24)
    min_atoms: int = setting(1, lo=1, hi=24)


@dataclass(frozen=True)
class RandomSettings:
    """Random symmetric structures (`count` is required when the section is given)."""

    count: int = setting(lo=1)
    max_atoms: int = setting(8, lo=1, hi=64)


@dataclass(frozen=True)
class EvolutionConfig:
    """The evolutionary search (`candidates.evolution`): its search space, settings and seed
    (see `csp.evolution.section`)."""

    space: SearchSpace
    settings: EvolutionSettings
    seed: int


@dataclass(frozen=True)
class CandidateSettings:
    """Where candidates come from; `prototypes` is `("all",)`, a tuple of names or `()`;
    `evolution` (seeded by the other sources) runs after the initial training."""

    enumerate: EnumerateSettings | None = setting(factory=EnumerateSettings)
    prototypes: tuple[str, ...] = setting(("all",))
    random: RandomSettings | None = setting(None)
    dedup: bool = setting(True)
    max_atoms: int | None = setting(None, lo=1)   # drop candidates with more atoms (any source)
    evolution: EvolutionConfig | None = setting(None)


@dataclass(frozen=True)
class MTPRelaxSettings:
    """The batched MTP relaxation of the screening stages (`screening.relax`, `csp.relax`):
    fmax in eV/Å, stress_tol in eV/Å³ (GPa in the file). Not the reference calculator's
    relaxation (`reference.relax`: `csp.reference.ReferenceRelaxSettings`)."""

    fmax: float = setting(0.01, positive=True)
    stress_tol: float = setting(0.1 * GPa, unit=GPa, positive=True)
    max_steps: int = setting(500, lo=1)
    batch_size: int = setting(64, lo=1)
    optimizer: str = setting("bfgs", choices=OPTIMIZERS)


@dataclass(frozen=True)
class StageSettings:
    """One screening stage: MTP level and the window kept above the hull, in units of σ (YAML key
    `window`); the stage keeps candidates within bound = max(window_sigmas × σ, min_bound) eV/atom."""

    level: int = setting(choices=MTP_LEVELS)
    window_sigmas: float = setting(4.0, key="window", positive=True)


@dataclass(frozen=True)
class ActiveLearningSettings:
    """Self-learning loop: grade thresholds, rounds, and how many reference calls per round."""

    select_threshold: float = setting(2.0, lo=1.0)
    break_threshold: float = setting(10.0, lo=1.0)
    max_rounds: int = setting(30, lo=1)
    initial_training: int = setting(20, lo=1)
    max_selected: int = setting(20, lo=1)
    # a pool of at least 3 × its pilot is learned on a composition-stratified random pilot first:
    # pilot = clamp(pilot_fraction × pool, pilot_min, pilot_max) structures
    pilot_fraction: float = setting(0.05, lo=0.0, hi=1.0)
    pilot_min: int = setting(200, lo=1)
    pilot_max: int = setting(5000, lo=1)


@dataclass(frozen=True)
class TrainingSettings:
    """MTP fitting: weights (MLIP defaults), iterations, cross-validation folds, radial basis."""

    energy_weight: float = setting(1.0, lo=0.0)
    force_weight: float = setting(0.01, lo=0.0)
    stress_weight: float = setting(0.001, lo=0.0)
    max_iter: int = setting(500, lo=1)
    cv_folds: int = setting(0, lo=0)   # >= 2: k-fold cross-validation of every potential (diagnostic only)
    min_dist: float = setting(1.6, positive=True)
    max_dist: float = setting(5.0, positive=True)
    radial_basis_size: int = setting(8, lo=2, hi=32)
    sigma_energy_range: float = setting(0.5, positive=True)  # eV/atom: σ is measured on configurations this close to the lowest


@dataclass(frozen=True)
class AuditSettings:
    """The audit of a stage potential on its relaxed candidates (csp.campaign.audit): reference
    single points at the MTP-relaxed geometry of `max(min_size, fraction × candidates)` of them
    per round, at most `max_size` (σ from 200 points is known to ±7 %; more only costs); rounds (audit, learn the audited points, retrain) go on while σ drops below
    `improvement` × the previous σ, at most `max_rounds`, or until σ <= `sigma_floor`.
    `range` (eV/atom above the MTP hull): where the first round draws the random part of its
    sample (later rounds: within three windows). The window keeps bound = max(window × σ, the
    largest error the audit met, `min_bound`) eV/atom above the MTP hull. `min_bound`
    (eV/atom): the last stage's window is never narrower, so that a σ near zero (a potential
    that reproduces a smooth reference almost exactly, as on EMT Ag-Au at σ = 0.04 meV/atom)
    does not close it; with DFT the audited σ holds the reference's own noise and sets the
    window. Errors the audit at the MTP geometry cannot see (the reference relaxation from
    there) are checked by the reference stage, which widens its bound and re-admits candidates
    if one exceeds it.
    `min_bound_coarse` (eV/atom): the same floor for every stage but the last — those only hand
    structures to a more accurate potential, which evaluates them before it relaxes any, so a
    wide window costs MTP evaluations, not reference calls; single structures were measured
    10–16 meV/atom off a level-10 stage's hull at σ ≈ 1 meV/atom (Cu-Pt, Cu-Au fcc ≤ 8)."""

    min_size: int = setting(20, lo=3)
    fraction: float = setting(0.02, lo=0.0)
    max_size: int = setting(200, lo=1)
    max_rounds: int = setting(3, lo=1)
    improvement: float = setting(0.8, positive=True)
    sigma_floor: float = setting(0.001, lo=0.0)
    range: float = setting(0.1, positive=True)
    min_bound: float = setting(0.00025, lo=0.0)
    min_bound_coarse: float = setting(0.025, lo=0.0)


@dataclass(frozen=True)
class ReferenceStageSettings:
    """The reference relaxation of the survivors (csp.campaign.reference_stage): in order of MTP
    energy above the hull, `batch` at a time (0: automatic, max(8, 2 × ranks)); with
    `early_stop`, survivors predicted above the reference hull by more than the last stage's
    bound are skipped; with `refit`, the potential is refitted on the finished reference
    relaxations whenever they have grown the training set by `refit_growth` (a fraction)."""

    batch: int = setting(0, lo=0)
    early_stop: bool = setting(True)
    refit: bool = setting(True)
    refit_growth: float = setting(0.25, lo=0.0)


@dataclass(frozen=True)
class ScreeningSettings:
    """The MTP screening stages and their shared settings."""

    # stage 1 (cheap) keeps a wider window: its error has heavier tails (a level-10 Cu-Au stage put
    # L1_0 CuAu 6.7 meV/atom above its hull at σ = 0.9 meV/atom), and what it lets through costs
    # only MTP relaxations in stage 2, whose window decides the reference relaxations
    stages: tuple[StageSettings, ...] = setting((StageSettings(10, 6.0), StageSettings(16, 4.0)))
    active_learning: ActiveLearningSettings = setting(factory=ActiveLearningSettings)
    relax: MTPRelaxSettings = setting(factory=MTPRelaxSettings)
    training: TrainingSettings = setting(factory=TrainingSettings)
    audit: AuditSettings = setting(factory=AuditSettings)
    reference_stage: ReferenceStageSettings = setting(factory=ReferenceStageSettings)


@dataclass(frozen=True)
class Search:
    """A validated search file; `reference` is the configured trusted calculator (its own
    relaxation settings in `reference.relax_settings`)."""

    path: Path
    name: str = setting()          # the file's name when not given
    elements: tuple[str, ...] = setting()
    run_dir: Path = setting()      # runs/<name> when not given
    reference: Reference = setting()
    seed: int = setting(0, lo=0)
    candidates: CandidateSettings = setting(factory=CandidateSettings)
    screening: ScreeningSettings = setting(factory=ScreeningSettings)
    text: str = ""

    def as_dict(self) -> dict:
        """The normalised search as plain data (stored with the campaign)."""
        return yaml.safe_load(self.text) or {}


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


def parse_search(data: Any, path: Path, text: str = "", run_dir: str | os.PathLike | None = None) -> Search:
    """Validate already-parsed YAML data (see `load_search`); errors name the file `path`."""
    try:
        return _search(data, Path(path), text, run_dir)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _search(data: Any, path: Path, text: str, run_dir: str | os.PathLike | None) -> Search:
    if data is None:
        fail("", "the search file is empty; required: elements")
    top = Section(data, "", Search)
    if "elements" not in top:
        fail("elements", "missing; give the elements of the search, e.g. elements: [Cu, Pd]")
    elements = _elements(top.get("elements"))
    name = top.read("name") if "name" in top else path.stem
    if not _NAME_RE.match(name):
        fail("name", f"expected letters, digits, '.', '_' or '-' (a directory name), got {name!r}")
    seed = top.read("seed")
    if run_dir is None:   # the file's run_dir is relative to the file's directory, not to the working directory
        if "run_dir" in top:
            run_dir = path.parent / Path(string(top.get("run_dir"), "run_dir")).expanduser()
        else:
            run_dir = Path("runs") / name
    reference = get_reference(top.get("reference"), "reference")
    # before anything runs: an element the reference cannot treat is an input error
    reference.check_elements(list(elements))
    return Search(path=path, name=name, elements=elements, seed=seed, run_dir=Path(run_dir),
                  candidates=_candidates(top.get("candidates"), elements, seed), reference=reference,
                  screening=_screening(top.get("screening")), text=text)


def _elements(value: Any) -> tuple[str, ...]:
    items = sequence(value, "elements")
    if not 1 <= len(items) <= 4:
        fail("elements", f"expected 1 to 4 elements, got {len(items)}")
    out: list[str] = []
    for i, el in enumerate(items):
        if not isinstance(el, str) or el not in chemical_symbols[1:]:
            fail(f"elements[{i}]", f"unknown element {show(el)}; expected a chemical symbol such as Cu")
        if el in out:
            fail(f"elements[{i}]", f"element {el} is listed twice")
        out.append(el)
    return tuple(out)


def _candidates(value: Any, elements: tuple[str, ...], seed: int) -> CandidateSettings:
    sec = Section(value, "candidates", CandidateSettings)
    given: dict[str, Any] = {}
    if "enumerate" in sec:
        given["enumerate"] = _enumerate(sec.get("enumerate"), sec.path("enumerate"))
    if "prototypes" in sec:
        given["prototypes"] = _prototypes(sec.get("prototypes"), sec.path("prototypes"))
    random = sec.get("random")
    given["random"] = None if random is None or random is False else read(RandomSettings, random, sec.path("random"))
    given["evolution"] = _evolution(sec.get("evolution"), sec.path("evolution"), elements, seed)
    candidates = sec.build(CandidateSettings, **given)
    if candidates.enumerate is None and not candidates.prototypes and candidates.random is None:
        fail("candidates", "no candidate source: enable at least one of enumerate, prototypes, random"
             + (" (evolution needs them as seeds)" if candidates.evolution is not None else ""))
    return candidates


def _enumerate(value: Any, key: str) -> EnumerateSettings | None:
    if value is False or value is None:
        return None
    sec = Section(value, key, EnumerateSettings)
    given = {}
    if "lattices" in sec:
        from csp.structures.lattices import BUILTIN   # the parent-lattice registry

        items = sequence(sec.get("lattices"), sec.path("lattices"))
        if not items:
            fail(sec.path("lattices"), f"expected at least one of {', '.join(BUILTIN)}")
        for i, lattice in enumerate(items):
            one_of(lattice, f"{sec.path('lattices')}[{i}]", BUILTIN)
        given["lattices"] = tuple(dict.fromkeys(items))
    settings = sec.build(EnumerateSettings, **given)
    if settings.min_atoms > settings.max_atoms:
        fail(sec.path("min_atoms"), f"must not exceed max_atoms ({settings.max_atoms}), got {settings.min_atoms}")
    return settings


def _prototypes(value: Any, key: str) -> tuple[str, ...]:
    if value is False or value is None:
        return ()
    if value == "all":
        return ("all",)
    if isinstance(value, str):
        fail(key, f"expected 'all', false or a list of prototype names, got {show(value)}")
    from csp.structures.prototypes import get_prototype

    names = []
    for i, item in enumerate(sequence(value, key)):
        name = string(item, f"{key}[{i}]")
        try:
            get_prototype(name)
        except InputError as exc:
            fail(f"{key}[{i}]", str(exc))
        names.append(name)
    return tuple(dict.fromkeys(names))


def _evolution(value: Any, key: str, elements: tuple[str, ...], seed: int) -> EvolutionConfig | None:
    """`candidates.evolution`: false or absent: off; true or a mapping: on (csp.evolution.section)."""
    if value is None or value is False:
        return None
    from csp.evolution.section import from_section

    space, settings, evo_seed = from_section(value, elements, seed, where=key)
    return EvolutionConfig(space=space, settings=settings, seed=evo_seed)


def _screening(value: Any) -> ScreeningSettings:
    sec = Section(value, "screening", ScreeningSettings)
    given = {"stages": _stages(sec.get("stages"), sec.path("stages"))} if "stages" in sec else {}
    screening = sec.build(ScreeningSettings, **given)
    al, training = screening.active_learning, screening.training
    if al.break_threshold <= al.select_threshold:
        fail("screening.active_learning.break_threshold",
             f"must be greater than select_threshold ({al.select_threshold}), got {al.break_threshold}")
    if training.max_dist <= training.min_dist:
        fail("screening.training.max_dist", f"must be greater than min_dist ({training.min_dist}), got {training.max_dist}")
    if training.cv_folds == 1:
        fail("screening.training.cv_folds", "expected 0 (off) or at least 2 folds, got 1")
    return screening


def _stages(value: Any, key: str) -> tuple[StageSettings, ...]:
    items = sequence(value, key)
    if not items:
        fail(key, "expected at least one stage, e.g. - {level: 10, window: 4.0}")
    return tuple(read(StageSettings, item, f"{key}[{i}]") for i, item in enumerate(items))
