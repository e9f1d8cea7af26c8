"""The campaign store: one SQLite file per run directory, the single source of truth.

It holds every candidate with its origin, each stage's relaxed structure / energy / grade /
status, the training set, every potential version with its σ, and every reference call with
its outcome. Only rank 0 writes, always inside transactions (WAL journal), so a process killed
at any moment (SIGKILL included) leaves the file consistent: the campaign resumes from the last
committed step. Steps are recorded by name (`mark_step`) so re-running one is a no-op.

Energies in eV, forces eV/Å, stress eV/Å³ (ASE sign, Voigt order xx yy zz yz xz xy).
"""

from __future__ import annotations

import hashlib
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
SCHEMA_VERSION = 3

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
    created REAL NOT NULL,
    structure_hash TEXT
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
# Schema 2: every relaxation pass's rows (the learning loop replays a pass from its own rows,
# never from a later one), the audit of each stage's potential, and reference calls findable by
# the structure they computed (`structure_hash`), so no configuration is computed twice.
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS relaxations (
    stage INTEGER NOT NULL,
    pass INTEGER NOT NULL,
    item INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
{result_columns}    fmax REAL,
    raised INTEGER,
    PRIMARY KEY (stage, pass, item)
);
CREATE TABLE IF NOT EXISTS audit (
    stage INTEGER NOT NULL,
    round INTEGER NOT NULL,
    candidate_id INTEGER NOT NULL,
    potential_id INTEGER NOT NULL,
    reference_call_id INTEGER,
    mtp_energy_per_atom REAL NOT NULL,
    ref_energy_per_atom REAL,
    e_above_mtp_hull REAL NOT NULL,
    PRIMARY KEY (stage, round, candidate_id)
);
CREATE INDEX IF NOT EXISTS reference_calls_hash ON reference_calls(kind, structure_hash);
CREATE INDEX IF NOT EXISTS relaxations_item ON relaxations(stage, item, pass);
""".replace("{result_columns}", _RESULT_COLUMNS)
# Schema 3: a relaxation row says whether its structure has more symmetry than the item's
# original structure (`raised`, see csp.campaign.learn.RAISED_SYMPREC); NULL in rows of older
# stores (not checked).

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


def structure_hash(atoms: Atoms) -> str:
    """Identity of a computed configuration: species, cell and positions rounded to 1e-5 Å (the
    same configuration from any code path hashes equal; a different one never does in practice)."""
    h = hashlib.sha1()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for arr in (atoms.cell.array, atoms.positions):
        h.update(np.round(np.asarray(arr, dtype=float) * 1e5).astype(np.int64).tobytes())
    return h.hexdigest()


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


def _id_chunks(ids: Iterable[int], size: int = 500) -> Iterator[list[int]]:
    """Consecutive lists of at most `size` ids (SQLite limits the parameters of one statement)."""
    ids = [int(i) for i in ids]
    for k in range(0, len(ids), size):
        yield ids[k:k + size]


def _damaged(path: Path, reason: str) -> InputError:
    return InputError(f"{path}: damaged campaign store ({reason}); csp leaves it untouched: move it aside "
                      f"(mv '{path}' '{path}.damaged') to start the campaign afresh, or restore it from a backup")


def _open_checked(path: Path) -> sqlite3.Connection:
    """Connect to an existing store after checking, read-only, that it is an intact csp store
    (not empty, SQLite's `quick_check` passes, a schema version is recorded): a damaged file
    is an InputError and is never written to. I/O errors (sqlite3.OperationalError) propagate."""
    if path.stat().st_size == 0:
        raise _damaged(path, "the file is empty")
    db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None)
    try:
        result = db.execute("PRAGMA quick_check(1)").fetchone()
        if result is None or result[0] != "ok":
            raise _damaged(path, f"integrity check: {result[0] if result else 'no answer'}")
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None or \
                db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone() is None:
            raise _damaged(path, "no schema version recorded")
    except sqlite3.OperationalError:
        db.close()
        raise
    except sqlite3.DatabaseError as exc:   # 'database disk image is malformed', 'file is not a database'
        db.close()
        raise _damaged(path, str(exc)) from None
    except BaseException:
        db.close()
        raise
    return db


def _create_store(path: Path) -> None:
    """Create a new, complete store (schema and version) at `path` atomically: it is built under
    a temporary name and linked into place, so a process killed while creating it never leaves an
    empty or half-made `campaign.sqlite` behind (an empty one is refused as damaged)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))
        finally:
            db.close()   # the last connection checkpoints and removes the -wal file
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass         # made meanwhile by another process: use that one
        except OSError:  # no hard links on this file system
            if not path.exists():
                os.rename(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    from csp.atomic import fsync_dir

    fsync_dir(path.parent)


@dataclass(frozen=True)
class PassRow:
    """One item's result in one pass of a stage's learning loop. kind: relax (from the stage's
    start structure), warm (re-relaxed from its latest geometry) or evaluate (energy, forces and
    grade at its latest geometry, no steps); fmax: largest force component, eV/Å."""

    item: int
    pass_no: int
    kind: str
    status: str
    potential_id: int | None
    energy: float | None
    energy_per_atom: float | None
    grade: float | None
    steps: int | None
    fmax: float | None
    atoms: Atoms | None
    raised: bool | None = None   # more symmetry than the item's original structure (None: not checked)


@dataclass(frozen=True)
class AuditPoint:
    """A held-out check of a stage potential: reference single point at the MTP-relaxed geometry
    of a candidate (eV/atom); e_above_mtp_hull is the candidate's MTP distance to the MTP hull."""

    stage: int
    round: int
    candidate_id: int
    potential_id: int
    reference_call_id: int | None
    mtp_energy_per_atom: float
    ref_energy_per_atom: float | None
    e_above_mtp_hull: float

    @property
    def error(self) -> float | None:
        """MTP minus reference energy per atom (eV/atom), None if the reference call failed."""
        return None if self.ref_energy_per_atom is None else self.mtp_energy_per_atom - self.ref_energy_per_atom


class CampaignStore:
    """The SQLite store of one run directory. Use as a context manager or call `close()`."""

    def __init__(self, run_dir: str | os.PathLike, create: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_NAME
        if not self.path.exists():
            if not create:
                raise InputError(f"'{self.run_dir}' is not a csp run directory (no {STORE_NAME})")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _create_store(self.path)
        self._db = _open_checked(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if create:
            self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS), each statement atomic
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
        if self.get_meta("schema_version") == 1:
            self._migrate_1_to_2()
        elif create:
            self._db.executescript(_SCHEMA_V2)
        if self.get_meta("schema_version") == 2:
            self._migrate_2_to_3()
        version = self.get_meta("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{self.path}: campaign store schema version {version}, expected {SCHEMA_VERSION}")

    def _migrate_1_to_2(self) -> None:
        """Schema 1 -> 2 in one transaction: new tables, structure hashes of the stored reference
        calls, and each stage result copied as the row of the pass that produced it."""
        self._db.executescript(_SCHEMA)
        with self.transaction() as db:
            cols = {r[1] for r in db.execute("PRAGMA table_info(reference_calls)")}
            if "structure_hash" not in cols:
                db.execute("ALTER TABLE reference_calls ADD COLUMN structure_hash TEXT")
            for rid, kind, text in db.execute("SELECT id, kind, structure FROM reference_calls").fetchall():
                h = None if text is None or kind != "single_point" else structure_hash(atoms_from_json(text))
                db.execute("UPDATE reference_calls SET structure_hash = ? WHERE id = ?", (h, rid))
        self._db.executescript(_SCHEMA_V2)
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO relaxations (stage, pass, item, kind, status, potential_id, energy,"
                       " energy_per_atom, grade, steps, structure, fmax) SELECT stage, COALESCE(pass, 0),"
                       " candidate_id, 'relax', status, potential_id, energy, energy_per_atom, grade, steps,"
                       " structure, NULL FROM stage_results")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '2')")

    def _migrate_2_to_3(self) -> None:
        """Schema 2 -> 3 in one transaction: relaxation rows get `raised` (NULL: not checked)."""
        with self.transaction() as db:
            if "raised" not in {r[1] for r in db.execute("PRAGMA table_info(relaxations)")}:
                db.execute("ALTER TABLE relaxations ADD COLUMN raised INTEGER")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '3')")

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
        found = {}
        for part in _id_chunks(ids):
            for r in self._db.execute("SELECT id, source, provenance, structure FROM candidates WHERE id IN"
                                      f" ({','.join('?' * len(part))})", part):
                found[r[0]] = self._candidate_atoms(*r)
        missing = [i for i in ids if int(i) not in found]
        if missing:
            raise KeyError(missing[0])
        return [(int(i), found[int(i)]) for i in ids]

    def candidate_strata(self, ids: Sequence[int]) -> dict[int, str]:
        """id -> the candidate's origin as "source" or "source/lattice" (e.g. "enumerate/fcc")."""
        out = {}
        for part in _id_chunks(ids):
            for cid, source, provenance in self._db.execute(
                    f"SELECT id, source, provenance FROM candidates WHERE id IN ({','.join('?' * len(part))})", part):
                lattice = json.loads(provenance).get("lattice") if provenance else None
                out[int(cid)] = f"{source}/{lattice}" if lattice else str(source)
        return out

    def candidate_counts(self, ids: Sequence[int] | None = None) -> dict[int, dict[str, float]]:
        """id -> composition {element: atoms in the cell} of all candidates (or of `ids`), read
        from the stored formulas: no structure is parsed."""
        from ase.formula import Formula

        sql = "SELECT id, formula FROM candidates"
        if ids is None:
            rows: Iterable = self._db.execute(sql + " ORDER BY id")
        else:
            rows = [r for part in _id_chunks(ids)
                    for r in self._db.execute(sql + f" WHERE id IN ({','.join('?' * len(part))})", part)]
        return {int(r[0]): {el: float(n) for el, n in Formula(r[1]).count().items()} for r in rows}

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

    def stage_results(self, stage: int, status: str | None = None, structures: bool = True) -> list[StageResult]:
        """Each candidate's result in `stage` (atoms None when `structures` is False)."""
        sql = ("SELECT candidate_id, stage, status, potential_id, energy, energy_per_atom, grade, steps,"
               f" {'structure' if structures else 'NULL'}, kept FROM stage_results WHERE stage = ?")
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

    def stage_structures(self, stage: int, ids: Sequence[int]) -> dict[int, Atoms]:
        """candidate id -> structure of its result in `stage` (relaxed by that stage), for `ids`
        (read in chunks; ids without a stored structure are left out)."""
        out = {}
        for part in _id_chunks(ids):
            for cid, text in self._db.execute(
                    "SELECT candidate_id, structure FROM stage_results WHERE stage = ? AND structure IS NOT NULL"
                    f" AND candidate_id IN ({','.join('?' * len(part))})", (int(stage), *part)):
                out[int(cid)] = atoms_from_json(text)
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
                           steps: int = 0, training: tuple[int, int, str] | None = None,
                           input_hash: str | None = None) -> int:
        """Record a reference call (idempotent on `key`: a second insert returns the first id).

        `training=(stage, round, source)` also adds a successful call to the training set,
        in the same transaction. `input_hash`: `structure_hash` of the requested structure
        (single points are looked up by it; default: the hash of `atoms`).
        """
        with self.transaction() as db:
            row = db.execute("SELECT id FROM reference_calls WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = db.execute(
                "INSERT INTO reference_calls (key, kind, candidate_id, ok, energy, forces, stress, structure,"
                " reason, seconds, steps, workdir, created, structure_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, kind, None if candidate_id is None else int(candidate_id), int(bool(ok)),
                 None if energy is None else float(energy),
                 None if forces is None else json.dumps(np.asarray(forces, dtype=float).tolist()),
                 None if stress is None else json.dumps(np.asarray(stress, dtype=float).tolist()),
                 None if atoms is None else atoms_to_json(atoms), reason, float(seconds), int(steps), workdir,
                 time.time(), input_hash if input_hash is not None else
                 (structure_hash(atoms) if atoms is not None and kind == "single_point" else None)))
            rid = int(cur.lastrowid)
            if training is not None and ok:
                db.execute("INSERT INTO training (reference_call_id, stage, round, source) VALUES (?,?,?,?)",
                           (rid, int(training[0]), int(training[1]), str(training[2])))
            return rid

    def reference_call_by_hash(self, kind: str, h: str) -> ReferenceRecord | None:
        """The successful call of `kind` that computed the configuration with structure hash `h`."""
        row = self._db.execute(
            "SELECT id, key, kind, candidate_id, ok, energy, forces, stress, structure, reason, seconds, steps"
            " FROM reference_calls WHERE kind = ? AND structure_hash = ? AND ok = 1 ORDER BY id LIMIT 1",
            (kind, h)).fetchone()
        return None if row is None else self._record(row)

    def add_to_training(self, reference_call_id: int, stage: int, round: int, source: str) -> bool:
        """Add a stored call to the training set (no-op if it is there); True if added."""
        with self.transaction() as db:
            cur = db.execute("INSERT OR IGNORE INTO training (reference_call_id, stage, round, source)"
                             " VALUES (?,?,?,?)", (int(reference_call_id), int(stage), int(round), str(source)))
            return cur.rowcount > 0

    def training_hashes(self) -> set[str]:
        """Structure hashes of every training configuration."""
        return {r[0] for r in self._db.execute(
            "SELECT r.structure_hash FROM training t JOIN reference_calls r ON r.id = t.reference_call_id"
            " WHERE r.structure_hash IS NOT NULL")}

    def training_size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM training").fetchone()[0])

    # -- relaxation passes (the learning loop's own record) ---------------------------------------
    def add_relaxations(self, stage: int, pass_no: int, kind: str, rows: Iterable[dict]) -> None:
        """Rows of relaxation pass `pass_no` of a stage's loop (`stage` is the loop's key: the
        stage number, or a negative key for a generation of the evolution); dicts as for
        `set_stage_results`, keyed by `candidate_id` (the loop's item), plus optional `fmax`."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO relaxations (stage, pass, item, kind, status, potential_id, energy,"
                " energy_per_atom, grade, steps, structure, fmax, raised) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(int(stage), int(pass_no), int(r["candidate_id"]), kind, *_result_values(r),
                  None if r.get("fmax") is None else float(r["fmax"]),
                  None if r.get("raised") is None else int(bool(r["raised"]))) for r in rows])

    def relaxation_items(self, stage: int, pass_no: int) -> set[int]:
        """Items with a row in pass `pass_no` (resume a pass)."""
        return {r[0] for r in self._db.execute(
            "SELECT item FROM relaxations WHERE stage = ? AND pass = ?", (int(stage), int(pass_no)))}

    def relaxations(self, stage: int, pass_no: int | None = None, latest: bool = False,
                    structures: bool = True, items: Sequence[int] | None = None) -> dict[int, "PassRow"]:
        """item -> row of pass `pass_no`, or (latest=True) each item's row of its highest pass
        up to `pass_no` (all passes when None); only `items` when given (read in chunks)."""
        if items is not None:
            out: dict[int, PassRow] = {}
            for part in _id_chunks(items):
                out.update(self._relaxations(stage, pass_no, latest, structures, part))
            return dict(sorted(out.items()))
        return self._relaxations(stage, pass_no, latest, structures, None)

    def _relaxations(self, stage: int, pass_no: int | None, latest: bool, structures: bool,
                     items: list[int] | None) -> dict[int, "PassRow"]:
        cols = "item, pass, kind, status, potential_id, energy, energy_per_atom, grade, steps, fmax, raised, " + \
            ("structure" if structures else "NULL")
        among = "" if items is None else f" AND item IN ({','.join('?' * len(items))})"
        chosen: tuple = () if items is None else tuple(items)
        if latest:
            limit = "" if pass_no is None else " AND pass <= ?"
            args: tuple = (int(stage),) + (() if pass_no is None else (int(pass_no),))
            sql = (f"SELECT {cols} FROM relaxations r WHERE stage = ?{limit}{among} AND pass = (SELECT MAX(pass)"
                   f" FROM relaxations q WHERE q.stage = r.stage AND q.item = r.item{limit.replace('pass', 'q.pass')})")
            args = args + chosen + args[1:]
        else:
            sql = f"SELECT {cols} FROM relaxations WHERE stage = ? AND pass = ?{among}"
            args = (int(stage), int(pass_no)) + chosen
        out = {}
        for r in self._db.execute(sql + " ORDER BY item", args):
            out[r[0]] = PassRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                                None if r[11] is None else atoms_from_json(r[11]), None if r[10] is None else bool(r[10]))
        return out

    # -- audit ------------------------------------------------------------------------------------
    def add_audit(self, stage: int, round: int, points: Iterable["AuditPoint"]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO audit (stage, round, candidate_id, potential_id, reference_call_id,"
                " mtp_energy_per_atom, ref_energy_per_atom, e_above_mtp_hull) VALUES (?,?,?,?,?,?,?,?)",
                [(int(stage), int(round), int(p.candidate_id), int(p.potential_id), p.reference_call_id,
                  float(p.mtp_energy_per_atom), p.ref_energy_per_atom, float(p.e_above_mtp_hull)) for p in points])

    def audit_points(self, stage: int, round: int | None = None) -> list["AuditPoint"]:
        """Audit points of a stage (one round or all), by round and candidate."""
        if not self._has_table("audit"):
            return []
        sql = ("SELECT stage, round, candidate_id, potential_id, reference_call_id, mtp_energy_per_atom,"
               " ref_energy_per_atom, e_above_mtp_hull FROM audit WHERE stage = ?")
        args: tuple = (int(stage),)
        if round is not None:
            sql += " AND round = ?"
            args += (int(round),)
        return [AuditPoint(*r) for r in self._db.execute(sql + " ORDER BY round, candidate_id", args)]

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

    # -- identity of results ------------------------------------------------------------------
    _RESULT_TABLES = (
        ("candidates", "id, source, formula, structure"),
        ("relaxations", "stage, pass, item, kind, status, potential_id, energy, grade, steps, structure"),
        ("stage_results", "candidate_id, stage, status, potential_id, energy, structure, kept, pass"),
        ("snapshots", "stage, pass, candidate_id, grade, structure"),
        ("potentials", "id, stage, round, level, sigma, n_train, mtp"),
        ("reference_calls", "id, key, kind, candidate_id, ok, energy, structure, structure_hash"),
        ("training", "reference_call_id, stage, round, source"),
        ("audit", "stage, round, candidate_id, potential_id, reference_call_id, mtp_energy_per_atom,"
                  " ref_energy_per_atom, e_above_mtp_hull"),
        ("evolution", "ident, generation, operator, status, energy, structure, accepted, fitness, candidate_id"),
    )

    def results_snapshot(self) -> dict[str, list[tuple]]:
        """Every result the campaign computed, table by table, without wall-clock columns (times,
        seconds, working directories): two campaigns of the same search that computed the same
        things give equal snapshots (the resume tests compare an interrupted campaign with an
        uninterrupted one this way). Steps are included with their recorded information."""
        out = {}
        for table, cols in self._RESULT_TABLES:
            if self._has_table(table):
                out[table] = [tuple(r) for r in self._db.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}")]
        out["steps"] = [tuple(r) for r in self._db.execute("SELECT name, info FROM steps ORDER BY name")]
        out["meta"] = [tuple(r) for r in self._db.execute(
            "SELECT key, value FROM meta WHERE key NOT IN ('stage_seconds', 'peak_memory_mb') ORDER BY key")]
        return out

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
        """Campaign counts (names as in the report's hull.json): `stage<N>_relaxed` (with an energy
        the screening uses: converged, out of steps, or re-evaluated after a retraining) and
        `stage<N>_kept` for every stage with results, whatever their number."""
        from csp.campaign.learn import USABLE as relaxed

        cur = self._db.cursor()
        cur.row_factory = sqlite3.Row

        def one(sql: str, *args) -> int:
            return int(cur.execute(sql, args).fetchone()["n"])

        out = {
            "candidates": one("SELECT COUNT(*) AS n FROM candidates"),
            "reference_single_points": one("SELECT COUNT(*) AS n FROM reference_calls WHERE kind = 'single_point'"),
            "reference_relaxations": one("SELECT COUNT(*) AS n FROM reference_calls WHERE kind = 'relax'"),
            "reference_failures": one("SELECT COUNT(*) AS n FROM reference_calls WHERE ok = 0"),
            "reference_relaxation_steps": one(
                "SELECT COALESCE(SUM(steps), 0) AS n FROM reference_calls WHERE kind = 'relax'"),
            "training_set": one("SELECT COUNT(*) AS n FROM training"),
            "potentials": one("SELECT COUNT(*) AS n FROM potentials"),
        }
        per_stage = cur.execute(
            f"SELECT stage, SUM(status IN ({', '.join('?' * len(relaxed))})) AS relaxed, SUM(kept = 1) AS kept"
            " FROM stage_results GROUP BY stage ORDER BY stage", relaxed).fetchall()
        for row in per_stage:
            out[f"stage{row['stage']}_relaxed"] = int(row["relaxed"] or 0)
            out[f"stage{row['stage']}_kept"] = int(row["kept"] or 0)
        if self._has_table("evolution") and one("SELECT COUNT(*) AS n FROM evolution"):
            out["evolution_generations"] = one("SELECT COUNT(*) AS n FROM evolution_generations")
            out["evolution_structures"] = one("SELECT COUNT(*) AS n FROM evolution")
            out["evolution_candidates"] = one("SELECT COUNT(*) AS n FROM candidates WHERE source = 'evolution'")
        return out
