"""The campaign store: one SQLite file per run directory, the single source of truth.

It holds every candidate with its origin, each stage's relaxed structure / energy / grade /
status, the training set, every potential version with its σ, and every reference call with
its outcome. Only rank 0 writes, always inside transactions (WAL journal), so a process killed
at any moment (SIGKILL included) leaves the file consistent: the campaign resumes from the last
committed step. Steps are recorded by name (`mark_step`) so re-running one is a no-op.

Energies in eV, forces eV/Å, stress eV/Å³ (ASE sign, Voigt order xx yy zz yz xz xy).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from csp.errors import InputError

STORE_NAME = "campaign.sqlite"
SCHEMA_VERSION = 1

# a relaxation result's columns, shared by stage_results and evolution
_RESULT_COLUMNS = """    potential_id INTEGER,
    energy REAL,
    energy_per_atom REAL,
    grade REAL,
    steps INTEGER,
    structure TEXT,
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (name TEXT PRIMARY KEY, done_at REAL NOT NULL, info TEXT);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    provenance TEXT NOT NULL,
    formula TEXT NOT NULL,
    natoms INTEGER NOT NULL,
    structure TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stage_results (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    stage INTEGER NOT NULL,
    status TEXT NOT NULL,
{result_columns}    kept INTEGER,
    pass INTEGER,
    updated REAL NOT NULL,
    PRIMARY KEY (candidate_id, stage)
);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY,
    stage INTEGER NOT NULL,
    pass INTEGER NOT NULL,
    candidate_id INTEGER NOT NULL,
    grade REAL NOT NULL,
    structure TEXT NOT NULL,
    UNIQUE (stage, pass, candidate_id)
);
CREATE TABLE IF NOT EXISTS potentials (
    id INTEGER PRIMARY KEY,
    stage INTEGER NOT NULL,
    round INTEGER NOT NULL,
    level INTEGER NOT NULL,
    sigma REAL,
    n_train INTEGER NOT NULL,
    mtp TEXT NOT NULL,
    extra TEXT,
    created REAL NOT NULL,
    UNIQUE (stage, round)
);
CREATE TABLE IF NOT EXISTS reference_calls (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    candidate_id INTEGER,
    ok INTEGER NOT NULL,
    energy REAL,
    forces TEXT,
    stress TEXT,
    structure TEXT,
    reason TEXT,
    seconds REAL,
    steps INTEGER,
    workdir TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS training (
    id INTEGER PRIMARY KEY,
    reference_call_id INTEGER NOT NULL UNIQUE REFERENCES reference_calls(id),
    stage INTEGER NOT NULL,
    round INTEGER NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_results_stage ON stage_results(stage, status);
CREATE TABLE IF NOT EXISTS evolution (
    id INTEGER PRIMARY KEY,
    ident TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    operator TEXT NOT NULL,
    parents TEXT NOT NULL,
    seed_candidate INTEGER,
    start TEXT NOT NULL,
    status TEXT,
{result_columns}    pass INTEGER,
    accepted INTEGER NOT NULL DEFAULT 0,
    fitness REAL,
    candidate_id INTEGER
);
CREATE TABLE IF NOT EXISTS evolution_generations (
    generation INTEGER PRIMARY KEY,
    potential_id INTEGER,
    stats TEXT NOT NULL
);
""".replace("{result_columns}", _RESULT_COLUMNS)
# The evolution tables were added after schema version 1 shipped: they are created (IF NOT
# EXISTS) whenever a campaign opens its store, and readers treat a missing table as empty, so
# existing run directories keep working without a version bump.


def atoms_to_json(atoms: Atoms) -> str:
    """Exact text form of a structure (numbers, cell, positions, pbc); floats round-trip."""
    return json.dumps({
        "numbers": atoms.numbers.tolist(),
        "cell": atoms.cell.array.tolist(),
        "positions": atoms.positions.tolist(),
        "pbc": atoms.pbc.tolist(),
    }, separators=(",", ":"))


def atoms_from_json(text: str) -> Atoms:
    """Inverse of `atoms_to_json`."""
    d = json.loads(text)
    return Atoms(numbers=d["numbers"], cell=d["cell"], positions=d["positions"], pbc=d["pbc"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _result_values(r: dict) -> tuple:
    """(status, potential_id, energy, energy_per_atom, grade, steps, structure) of a relaxation
    row (the `_RESULT_COLUMNS` plus status), as stored."""
    atoms, energy = r.get("atoms"), r.get("energy")
    return (str(r["status"]), r.get("potential_id"), None if energy is None else float(energy),
            None if energy is None or not atoms else float(energy) / len(atoms),
            None if r.get("grade") is None else float(r["grade"]),
            None if r.get("steps") is None else int(r["steps"]),
            None if atoms is None else atoms_to_json(atoms))


@dataclass(frozen=True)
class ReferenceRecord:
    """A stored reference call (single point or relaxation)."""

    id: int
    key: str
    kind: str
    candidate_id: int | None
    ok: bool
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    atoms: Atoms | None
    reason: str
    seconds: float
    steps: int = 0

    def to_atoms(self) -> Atoms:
        """The structure with its reference results attached (SinglePointCalculator)."""
        if self.atoms is None:
            raise ValueError(f"reference call {self.key} has no structure")
        atoms = self.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=self.energy, forces=self.forces, stress=self.stress)
        atoms.info["reference_call"] = self.key
        return atoms


@dataclass(frozen=True)
class EvolutionRecord:
    """One structure made by the evolutionary search (ident like 'g3-7', `row` its integer key):
    origin, latest self-learning MTP relaxation (status, energy eV, relaxed structure), whether
    the search accepted it as an individual, its final fitness (eV/atom above the evolution's
    MTP hull), the candidate it became (`candidate_id`) or, for a seed, came from (`seed_candidate`)."""

    row: int
    ident: str
    generation: int
    operator: str
    parents: tuple[str, ...]
    seed_candidate: int | None
    start: Atoms
    status: str | None
    potential_id: int | None
    energy: float | None
    grade: float | None
    atoms: Atoms | None
    accepted: bool
    fitness: float | None
    candidate_id: int | None


@dataclass(frozen=True)
class StageResult:
    """A candidate's latest relaxation in one screening stage."""

    candidate_id: int
    stage: int
    status: str
    potential_id: int | None
    energy: float | None
    energy_per_atom: float | None
    grade: float | None
    steps: int | None
    atoms: Atoms | None
    kept: bool | None


class CampaignStore:
    """The SQLite store of one run directory. Use as a context manager or call `close()`."""

    def __init__(self, run_dir: str | os.PathLike, create: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_NAME
        if not self.path.exists():
            if not create:
                raise InputError(f"'{self.run_dir}' is not a csp run directory (no {STORE_NAME})")
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if create:
            self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS), each statement atomic
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
        version = self.get_meta("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{self.path}: campaign store schema version {version}, expected {SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "CampaignStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside one atomic transaction (nested calls join the outer one)."""
        if self._db.in_transaction:
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def integrity_ok(self) -> bool:
        """SQLite's own integrity check of the file."""
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- meta and steps ---------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(_jsonable(value))))

    def get_meta(self, key: str, default: Any = None) -> Any:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return default
        return default if row is None else json.loads(row[0])

    def step_done(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM steps WHERE name = ?", (name,)).fetchone() is not None

    def mark_step(self, name: str, info: Any = None) -> None:
        """Record a finished step (inside the caller's transaction when there is one)."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                       (name, time.time(), json.dumps(_jsonable(info))))

    def step_info(self, name: str) -> Any:
        row = self._db.execute("SELECT info FROM steps WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def steps(self) -> list[tuple[str, float]]:
        return [(r[0], r[1]) for r in self._db.execute("SELECT name, done_at FROM steps ORDER BY done_at")]

    # -- candidates -------------------------------------------------------------------------
    def add_candidates(self, structures: Iterable[Atoms]) -> list[int]:
        """Insert candidates (origin from atoms.info['source'], rest of info as provenance)."""
        ids = []
        with self.transaction() as db:
            for atoms in structures:
                info = _jsonable(dict(atoms.info))
                source = str(info.pop("source", "unknown"))
                cur = db.execute(
                    "INSERT INTO candidates (source, provenance, formula, natoms, structure) VALUES (?,?,?,?,?)",
                    (source, json.dumps(info, default=str), atoms.get_chemical_formula(), len(atoms),
                     atoms_to_json(atoms)))
                ids.append(int(cur.lastrowid))
        return ids

    def n_candidates(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0])

    def candidate(self, cid: int) -> Atoms:
        row = self._db.execute("SELECT source, provenance, structure FROM candidates WHERE id = ?",
                               (cid,)).fetchone()
        if row is None:
            raise KeyError(cid)
        return self._candidate_atoms(cid, *row)

    def candidates(self, ids: Sequence[int] | None = None) -> list[tuple[int, Atoms]]:
        """(id, Atoms) of all candidates (or of `ids`, in that order)."""
        if ids is None:
            rows = self._db.execute("SELECT id, source, provenance, structure FROM candidates ORDER BY id")
            return [(r[0], self._candidate_atoms(*r)) for r in rows]
        return [(int(i), self.candidate(int(i))) for i in ids]

    def candidate_ids(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT id FROM candidates ORDER BY id")]

    @staticmethod
    def _candidate_atoms(cid: int, source: str, provenance: str, structure: str) -> Atoms:
        atoms = atoms_from_json(structure)
        atoms.info.update(json.loads(provenance))
        atoms.info["source"] = source
        atoms.info["candidate_id"] = int(cid)
        return atoms

    # -- stage results ----------------------------------------------------------------------
    def set_stage_results(self, stage: int, rows: Iterable[dict], pass_no: int | None = None) -> None:
        """Upsert relaxations: dicts with candidate_id, status, potential_id, energy (eV),
        grade, steps, atoms (relaxed structure); `pass_no` is the relaxation pass of the stage."""
        now = time.time()
        with self.transaction() as db:
            for r in rows:
                db.execute(
                    "INSERT OR REPLACE INTO stage_results (candidate_id, stage, status, potential_id, energy,"
                    " energy_per_atom, grade, steps, structure, kept, pass, updated)"
                    " VALUES (?,?,?,?,?,?,?,?,?,NULL,?,?)",
                    (int(r["candidate_id"]), int(stage), *_result_values(r),
                     None if pass_no is None else int(pass_no), now))

    def stage_pass_done_ids(self, stage: int, pass_no: int) -> set[int]:
        """Candidates whose stage result comes from relaxation pass `pass_no` (resume a pass)."""
        return {r[0] for r in self._db.execute(
            "SELECT candidate_id FROM stage_results WHERE stage = ? AND pass = ?", (int(stage), int(pass_no)))}

    def add_snapshots(self, stage: int, pass_no: int, snaps: Iterable[tuple[int, float, Atoms]]) -> None:
        """Extrapolative configurations (candidate_id, grade, structure) met in a relaxation pass."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO snapshots (stage, pass, candidate_id, grade, structure) VALUES (?,?,?,?,?)",
                [(int(stage), int(pass_no), int(c), float(g), atoms_to_json(a)) for c, g, a in snaps])

    def snapshots(self, stage: int, pass_no: int) -> list[tuple[int, int, float, Atoms]]:
        """(snapshot id, candidate_id, grade, structure) of a pass, by candidate id."""
        return [(r[0], r[1], r[2], atoms_from_json(r[3])) for r in self._db.execute(
            "SELECT id, candidate_id, grade, structure FROM snapshots WHERE stage = ? AND pass = ?"
            " ORDER BY candidate_id", (int(stage), int(pass_no)))]

    def stage_results(self, stage: int, status: str | None = None) -> list[StageResult]:
        sql = ("SELECT candidate_id, stage, status, potential_id, energy, energy_per_atom, grade, steps,"
               " structure, kept FROM stage_results WHERE stage = ?")
        args: tuple = (int(stage),)
        if status is not None:
            sql += " AND status = ?"
            args += (status,)
        out = []
        for r in self._db.execute(sql + " ORDER BY candidate_id", args):
            out.append(StageResult(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                                   None if r[8] is None else atoms_from_json(r[8]),
                                   None if r[9] is None else bool(r[9])))
        return out

    def set_kept(self, stage: int, kept_ids: Iterable[int]) -> None:
        """Mark which candidates survive a stage's window (all others of the stage: not kept)."""
        kept = [(int(i), int(stage)) for i in kept_ids]
        with self.transaction() as db:
            db.execute("UPDATE stage_results SET kept = 0 WHERE stage = ?", (int(stage),))
            db.executemany("UPDATE stage_results SET kept = 1 WHERE candidate_id = ? AND stage = ?", kept)

    def kept_ids(self, stage: int) -> list[int]:
        return [r[0] for r in self._db.execute(
            "SELECT candidate_id FROM stage_results WHERE stage = ? AND kept = 1 ORDER BY candidate_id",
            (int(stage),))]

    # -- potentials -------------------------------------------------------------------------
    def add_potential(self, stage: int, round: int, level: int, mtp_text: str, sigma: float | None,
                      n_train: int, extra: dict | None = None) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR REPLACE INTO potentials (stage, round, level, sigma, n_train, mtp, extra, created)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (int(stage), int(round), int(level), None if sigma is None else float(sigma), int(n_train),
                 mtp_text, json.dumps(_jsonable(extra or {})), time.time()))
            return int(cur.lastrowid)

    def potentials(self, stage: int | None = None) -> list[dict]:
        sql = "SELECT id, stage, round, level, sigma, n_train, mtp, extra, created FROM potentials"
        args: tuple = ()
        if stage is not None:
            sql += " WHERE stage = ?"
            args = (int(stage),)
        cols = ("id", "stage", "round", "level", "sigma", "n_train", "mtp", "extra", "created")
        out = []
        for r in self._db.execute(sql + " ORDER BY stage, round", args):
            d = dict(zip(cols, r))
            d["extra"] = json.loads(d["extra"] or "{}")
            out.append(d)
        return out

    def latest_potential(self, stage: int) -> dict | None:
        pots = self.potentials(stage)
        return pots[-1] if pots else None

    # -- reference calls and training set ----------------------------------------------------
    def reference_call(self, key: str) -> ReferenceRecord | None:
        row = self._db.execute(
            "SELECT id, key, kind, candidate_id, ok, energy, forces, stress, structure, reason, seconds, steps"
            " FROM reference_calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._record(row)

    def reference_calls(self, kind: str | None = None) -> list[ReferenceRecord]:
        sql = ("SELECT id, key, kind, candidate_id, ok, energy, forces, stress, structure, reason, seconds, steps"
               " FROM reference_calls")
        args: tuple = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        return [self._record(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    @staticmethod
    def _record(r) -> ReferenceRecord:
        return ReferenceRecord(
            id=r[0], key=r[1], kind=r[2], candidate_id=r[3], ok=bool(r[4]), energy=r[5],
            forces=None if r[6] is None else np.array(json.loads(r[6]), dtype=float).reshape(-1, 3),
            stress=None if r[7] is None else np.array(json.loads(r[7]), dtype=float),
            atoms=None if r[8] is None else atoms_from_json(r[8]), reason=r[9] or "", seconds=r[10] or 0.0,
            steps=r[11] or 0)

    def add_reference_call(self, key: str, kind: str, candidate_id: int | None, ok: bool,
                           atoms: Atoms | None = None, energy: float | None = None,
                           forces: np.ndarray | None = None, stress: np.ndarray | None = None,
                           reason: str = "", seconds: float = 0.0, workdir: str | None = None,
                           steps: int = 0, training: tuple[int, int, str] | None = None) -> int:
        """Record a reference call (idempotent on `key`: a second insert returns the first id).

        `training=(stage, round, source)` also adds a successful call to the training set,
        in the same transaction.
        """
        with self.transaction() as db:
            row = db.execute("SELECT id FROM reference_calls WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = db.execute(
                "INSERT INTO reference_calls (key, kind, candidate_id, ok, energy, forces, stress, structure,"
                " reason, seconds, steps, workdir, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, kind, None if candidate_id is None else int(candidate_id), int(bool(ok)),
                 None if energy is None else float(energy),
                 None if forces is None else json.dumps(np.asarray(forces, dtype=float).tolist()),
                 None if stress is None else json.dumps(np.asarray(stress, dtype=float).tolist()),
                 None if atoms is None else atoms_to_json(atoms), reason, float(seconds), int(steps), workdir,
                 time.time()))
            rid = int(cur.lastrowid)
            if training is not None and ok:
                db.execute("INSERT INTO training (reference_call_id, stage, round, source) VALUES (?,?,?,?)",
                           (rid, int(training[0]), int(training[1]), str(training[2])))
            return rid

    def training_set(self) -> list[ReferenceRecord]:
        """Every training configuration, ordered by (stage, round, call key) — independent of
        the order in which parallel reference calls finished."""
        rows = self._db.execute(
            "SELECT r.id, r.key, r.kind, r.candidate_id, r.ok, r.energy, r.forces, r.stress, r.structure,"
            " r.reason, r.seconds, r.steps FROM training t JOIN reference_calls r ON r.id = t.reference_call_id"
            " ORDER BY t.stage, t.round, r.key")
        return [self._record(r) for r in rows]

    def training_history(self) -> list[tuple[int, int, int]]:
        """(stage, round, configurations added) in order."""
        return [tuple(r) for r in self._db.execute(
            "SELECT stage, round, COUNT(*) FROM training GROUP BY stage, round ORDER BY stage, round")]

    # -- evolutionary search -----------------------------------------------------------------
    def _has_table(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (name,)).fetchone() is not None

    def add_offspring(self, items: Iterable[tuple[str, int, str, Sequence[str], int | None, Atoms]]) -> dict[str, int]:
        """Register structures of the evolutionary search before relaxing them: (ident,
        generation, operator, parents, seed candidate id or None, start structure); idempotent
        on ident. Returns ident -> row key for all of them."""
        out = {}
        with self.transaction() as db:
            for ident, gen, op, parents, seed_cid, atoms in items:
                db.execute("INSERT OR IGNORE INTO evolution (ident, generation, operator, parents, seed_candidate,"
                           " start) VALUES (?,?,?,?,?,?)",
                           (ident, int(gen), str(op), json.dumps(list(parents)),
                            None if seed_cid is None else int(seed_cid), atoms_to_json(atoms)))
                out[ident] = int(db.execute("SELECT id FROM evolution WHERE ident = ?", (ident,)).fetchone()[0])
        return out

    def set_offspring_results(self, rows: Iterable[dict], pass_no: int) -> None:
        """Relaxation results of evolution rows (dicts as for `set_stage_results`, with the row
        key as candidate_id)."""
        with self.transaction() as db:
            for r in rows:
                db.execute(
                    "UPDATE evolution SET status = ?, potential_id = ?, energy = ?, energy_per_atom = ?, grade = ?,"
                    " steps = ?, structure = ?, pass = ? WHERE id = ?",
                    (*_result_values(r), int(pass_no), int(r["candidate_id"])))

    def offspring_pass_done(self, rows: Sequence[int], pass_no: int) -> set[int]:
        """Those of `rows` whose latest relaxation comes from pass `pass_no` (resume a pass)."""
        wanted = {int(r) for r in rows}
        return {r[0] for r in self._db.execute("SELECT id FROM evolution WHERE pass = ?", (int(pass_no),))
                if r[0] in wanted}

    def set_offspring_fields(self, ident: str, **fields: Any) -> None:
        """Update `accepted`, `fitness` or `candidate_id` of one structure."""
        allowed = {"accepted", "fitness", "candidate_id"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown evolution fields {sorted(set(fields) - allowed)}")
        with self.transaction() as db:
            for k, v in fields.items():
                db.execute(f"UPDATE evolution SET {k} = ? WHERE ident = ?", (v, ident))

    def offspring(self, rows: Sequence[int] | None = None, generation: int | None = None) -> list[EvolutionRecord]:
        """Structures of the evolutionary search (all, given row keys, or one generation), by row."""
        if not self._has_table("evolution"):
            return []
        sql = ("SELECT id, ident, generation, operator, parents, seed_candidate, start, status, potential_id,"
               " energy, grade, structure, accepted, fitness, candidate_id FROM evolution")
        where, args = [], []
        if generation is not None:
            where.append("generation = ?")
            args.append(int(generation))
        if rows is not None:   # filtered in SQL: parsing every stored structure per call is quadratic
            where.append("id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps([int(r) for r in rows]))
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [EvolutionRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], atoms_from_json(r[6]), r[7],
                               r[8], r[9], r[10], None if r[11] is None else atoms_from_json(r[11]), bool(r[12]),
                               r[13], r[14])
                for r in self._db.execute(sql + " ORDER BY id", args)]

    def add_generation(self, generation: int, potential_id: int | None, stats: dict) -> int | None:
        """Record a generation's statistics once (a replay keeps the first record); returns the
        potential id stored for it (the evolution potential current when it closed)."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO evolution_generations VALUES (?,?,?)",
                       (int(generation), potential_id, json.dumps(_jsonable(stats))))
            return db.execute("SELECT potential_id FROM evolution_generations WHERE generation = ?",
                              (int(generation),)).fetchone()[0]

    def generations(self) -> list[dict]:
        """Per-generation statistics of the evolutionary search (dicts of `GenerationStats`)."""
        if not self._has_table("evolution_generations"):
            return []
        return [dict(json.loads(r[1]), potential_id=r[0]) for r in self._db.execute(
            "SELECT potential_id, stats FROM evolution_generations ORDER BY generation")]

    # -- summary ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Campaign counts (names as in the report's hull.json)."""
        q = lambda sql, *a: int(self._db.execute(sql, a).fetchone()[0])  # noqa: E731
        out = {
            "candidates": q("SELECT COUNT(*) FROM candidates"),
            "reference_single_points": q("SELECT COUNT(*) FROM reference_calls WHERE kind = 'single_point'"),
            "reference_relaxations": q("SELECT COUNT(*) FROM reference_calls WHERE kind = 'relax'"),
            "reference_failures": q("SELECT COUNT(*) FROM reference_calls WHERE ok = 0"),
            "reference_relaxation_steps": q("SELECT COALESCE(SUM(steps), 0) FROM reference_calls WHERE kind = 'relax'"),
            "training_set": q("SELECT COUNT(*) FROM training"),
            "potentials": q("SELECT COUNT(*) FROM potentials"),
        }
        for stage in sorted(r[0] for r in self._db.execute("SELECT DISTINCT stage FROM stage_results")):
            out[f"stage{stage}_relaxed"] = q(
                "SELECT COUNT(*) FROM stage_results WHERE stage = ? AND status = 'converged'", stage)
            out[f"stage{stage}_kept"] = q("SELECT COUNT(*) FROM stage_results WHERE stage = ? AND kept = 1", stage)
        if self._has_table("evolution") and q("SELECT COUNT(*) FROM evolution"):
            out["evolution_generations"] = q("SELECT COUNT(*) FROM evolution_generations")
            out["evolution_structures"] = q("SELECT COUNT(*) FROM evolution")
            out["evolution_candidates"] = q("SELECT COUNT(*) FROM candidates WHERE source = 'evolution'")
        return out

    # -- report -----------------------------------------------------------------------------
    def report_data(self):
        """Everything the report shows, as `csp.report.ReportData` (energies eV/atom)."""
        from csp.report import CandidateRecord, Counts, EvolutionData, Failure, LearningRound, ReportData

        elements = list(self.get_meta("elements") or [])
        ref_settings = self.get_meta("reference") or {}
        stage_rows: dict[int, dict[int, StageResult]] = {}
        for (stage,) in self._db.execute("SELECT DISTINCT stage FROM stage_results ORDER BY stage").fetchall():
            stage_rows[stage] = {r.candidate_id: r for r in self.stage_results(stage)}
        relaxations = {r.candidate_id: r for r in self.reference_calls("relax")}
        records = []
        for cid, atoms in self.candidates():
            stage_name, best = "generated", atoms
            mtp_e = {}
            for stage, rows in stage_rows.items():
                r = rows.get(cid)
                if r is None:
                    continue
                if r.energy_per_atom is not None and r.status in ("converged", "max_steps"):
                    mtp_e[f"stage{stage}"] = r.energy_per_atom
                    stage_name = f"stage{stage}"
                    if r.atoms is not None:
                        best = r.atoms
            ref_e = None
            rec = relaxations.get(cid)
            if rec is not None and rec.ok and rec.atoms is not None and rec.energy is not None:
                stage_name, best, ref_e = "reference", rec.atoms, rec.energy / len(rec.atoms)
            records.append(CandidateRecord(id=str(cid), origin=str(atoms.info.get("source", "")), stage=stage_name,
                                           atoms=best, mtp_energies=mtp_e, reference_energy=ref_e))
        c = self.counts()
        counts = Counts(candidates=c["candidates"], stage1_relaxed=c.get("stage1_relaxed", 0),
                        stage1_kept=c.get("stage1_kept", 0), stage2_kept=c.get("stage2_kept", 0),
                        reference_relaxations=c["reference_relaxations"],
                        reference_single_points=c["reference_single_points"],
                        reference_failures=c["reference_failures"])
        curve, sigma = [], {}
        for p in self.potentials():
            # stage 0 holds the evolutionary search's potentials (csp.campaign.evolution)
            name = f"stage{p['stage']}" if p["stage"] > 0 else "evolution"
            curve.append(LearningRound(stage=name, round=p["round"], training_size=p["n_train"],
                                       rmse_energy=p["extra"].get("rmse_energy"), sigma=p["sigma"]))
            if p["sigma"] is not None and p["stage"] > 0:
                sigma[name] = p["sigma"]
        failures = [Failure(id=str(r.candidate_id if r.candidate_id is not None else r.key),
                            operation=r.kind, reason=r.reason)
                    for r in self.reference_calls() if not r.ok]
        notes = []
        for stage in stage_rows:
            if self.get_meta(f"stage{stage}_max_rounds_reached"):
                notes.append(f"Stage {stage}: the active-learning loop hit max_rounds with structures "
                             "still extrapolating.")
        evolution = None
        gens = self.generations()
        if gens:
            meta = self.get_meta("evolution") or {}
            structures = [{"id": r.ident, "generation": r.generation, "operator": r.operator,
                           "parents": list(r.parents), "seed": r.seed_candidate is not None,
                           "candidate": r.seed_candidate if r.seed_candidate is not None else r.candidate_id,
                           "fitness": r.fitness if r.accepted else None} for r in self.offspring()]
            lineage = {str(cid): a.info["lineage"] for cid, a in self.candidates()
                       if a.info.get("source") == "evolution" and "lineage" in a.info}
            evolution = EvolutionData(generations=gens, structures=structures, hull=list(meta.get("hull", [])),
                                      lineage=lineage, stopped=str(meta.get("stopped", "running")))
        return ReportData(elements=elements, reference=str(ref_settings.get("calculator", "")),
                          reference_settings=ref_settings, candidates=records, counts=counts,
                          stage_seconds=dict(self.get_meta("stage_seconds") or {}), learning_curve=curve,
                          failures=failures, sigma=sigma, name=str(self.get_meta("name") or ""), notes=notes,
                          evolution=evolution)
