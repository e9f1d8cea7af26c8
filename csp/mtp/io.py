"""MLIP file formats: potentials (.mtp / .almtp) and configurations (.cfg), and ase.Atoms conversion.

Units as in MLIP: Å for positions and cell, eV for energy, eV/Å for forces, eV for `PlusStress`
(= -V * stress in ASE's sign convention, order xx yy zz yz xz xy). Writers print every float with
17 significant digits, so write -> read reproduces every number exactly. Malformed input raises
`InputError` naming the file and line.

Every reader/writer has a string form (`parse_mtp`/`format_mtp`, `parse_cfg`/`format_cfg`).
Potential files written by MLIP (`mlp train` output, `.almtp`) may end with MLIP's binary
selection block (`#MVS_v1.1`, the active set): `read_mtp` reads the text before it,
`read_almtp` also the block (`MLIPSelection`), `write_mtp(..., selection=)` writes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from csp.atomic import atomic_write
from csp.errors import InputError
from csp.mtp.potential import MTP

PathLike = str | os.PathLike

# ====================================================================== potentials (.mtp/.almtp)

_INT_KEYS = ("species_count", "radial_basis_size", "radial_funcs_count", "alpha_moments_count",
             "alpha_index_basic_count", "alpha_index_times_count", "alpha_scalar_moments")
_FLOAT_KEYS = ("scaling", "min_dist", "max_dist")
_ARRAY_KEYS = ("alpha_index_basic", "alpha_index_times", "alpha_moment_mapping",
               "species_coeffs", "moment_coeffs")
_STR_KEYS = ("version", "potential_name", "potential_tag", "radial_basis_type")
_KNOWN = set(_INT_KEYS) | set(_FLOAT_KEYS) | set(_ARRAY_KEYS) | set(_STR_KEYS)


def _numbers(text: str, path: PathLike, lineno: int, dtype=float) -> np.ndarray:
    """Numbers in a brace list like `{{0, 1}, {2, 3}}` flattened; `{}` gives an empty array."""
    body = text.replace("{", " ").replace("}", " ").replace(",", " ").split()
    try:
        if dtype is int:
            return np.array([int(tok) for tok in body], dtype=np.int64)
        return np.array([float(tok) for tok in body], dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}:{lineno}: cannot parse numbers in '{text.strip()[:60]}'") from None


MVS_MARKER = b"#MVS_v1.1"


def split_mtp_bytes(data: bytes) -> tuple[bytes, bytes | None]:
    """Split the bytes of a potential file into its text part and MLIP's binary selection block
    (`#MVS_v1.1` and what follows, None if absent). `mlp train` and MLIP-3's `.almtp` files
    append that block (weights, the active-set matrices as raw doubles, equation links and the
    selected configurations) after the potential text."""
    k = data.find(MVS_MARKER)
    while k > 0 and data[k - 1:k] not in (b"\n", b"\r"):
        k = data.find(MVS_MARKER, k + 1)
    if k < 0:
        try:
            data.decode("utf-8")
            return data, None
        except UnicodeDecodeError:
            # older selection layouts (no marker): MLIP's own rule, the text ends at the first '#'
            k = data.find(b"\n#")
            if k < 0:
                return data, None
            k += 1
    return data[:k], data[k:]


def read_mtp(path: PathLike) -> MTP:
    """Read an MLIP potential file (.mtp, or MLIP-3 .almtp / `mlp train` output with the binary
    `#MVS_v1.1` selection block after the text; the block is ignored here, see
    `read_mlip_selection`)."""
    with open(path, "rb") as fh:
        text, _ = split_mtp_bytes(fh.read())
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text potential file (byte {exc.start} is not UTF-8)") from None
    return parse_mtp(decoded, source=str(path))


def parse_mtp(text: str, source: str = "<string>") -> MTP:
    """An MTP from the text of an MLIP potential file (`source` names it in error messages).
    A trailing `#MVS_v1.1` selection block, if the text contains one, is ignored."""
    path = source
    k = text.find(MVS_MARKER.decode())
    if k >= 0 and (k == 0 or text[k - 1] in "\r\n"):
        text = text[:k]
    lines = text.splitlines()
    values: dict[str, tuple[str, int]] = {}
    metadata: dict[str, str] = {}
    radial_blocks: dict[tuple[int, int], list[np.ndarray]] = {}
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None or lines[first].strip() != "MTP":
        raise InputError(f"{path}:{(first or 0) + 1}: not an MTP potential file (first line must be 'MTP')")
    i = first + 1
    while i < len(lines):
        raw, lineno = lines[i], i + 1
        s = raw.strip()
        i += 1
        if not s or s.startswith("#"):
            continue
        if s == "radial_coeffs":
            while i < len(lines) and re.fullmatch(r"\d+\s*-\s*\d+", lines[i].strip()):
                a, b = (int(t) for t in lines[i].strip().split("-"))
                block_line = i + 1
                i += 1
                rows = []
                while i < len(lines) and lines[i].strip().startswith("{"):
                    rows.append(_numbers(lines[i], path, i + 1))
                    i += 1
                if (a, b) in radial_blocks:
                    raise InputError(f"{path}:{block_line}: radial_coeffs block {a}-{b} given twice")
                radial_blocks[(a, b)] = rows
            continue
        if "=" not in s:
            raise InputError(f"{path}:{lineno}: expected 'key = value', got '{s[:60]}'")
        key, _, val = s.partition("=")
        key, val = key.strip(), val.strip()
        if key in _KNOWN:
            values[key] = (val, lineno)
        else:
            metadata[key] = val

    def need(key: str) -> tuple[str, int]:
        if key not in values:
            raise InputError(f"{path}: missing '{key}' in potential file")
        return values[key]

    def as_int(key: str) -> int:
        val, ln = need(key)
        try:
            return int(val)
        except ValueError:
            raise InputError(f"{path}:{ln}: '{key}' must be an integer, got '{val}'") from None

    def as_float(key: str, default: float | None = None) -> float:
        if default is not None and key not in values:
            return default
        val, ln = need(key)
        try:
            return float(val)
        except ValueError:
            raise InputError(f"{path}:{ln}: '{key}' must be a number, got '{val}'") from None

    basis_type = values.get("radial_basis_type", ("RBChebyshev", 0))[0]
    if basis_type != "RBChebyshev":
        raise InputError(f"{path}:{values['radial_basis_type'][1]}: radial basis '{basis_type}' "
                         "is not supported (only RBChebyshev)")
    S, R, B = as_int("species_count"), as_int("radial_funcs_count"), as_int("radial_basis_size")
    if S < 1 or R < 1 or B < 1:
        raise InputError(f"{path}: species_count, radial_funcs_count, radial_basis_size must be positive")
    radial = np.zeros((S, S, R, B))
    for a in range(S):
        for b in range(S):
            rows = radial_blocks.get((a, b))
            if rows is None:
                raise InputError(f"{path}: radial_coeffs block {a}-{b} missing")
            if len(rows) != R or any(r.size != B for r in rows):
                raise InputError(f"{path}: radial_coeffs block {a}-{b} must have {R} rows of {B} numbers")
            radial[a, b] = np.array(rows)
    for (a, b) in radial_blocks:
        if a >= S or b >= S:
            raise InputError(f"{path}: radial_coeffs block {a}-{b} exceeds species_count = {S}")

    def array(key: str, dtype, width: int, count: int) -> np.ndarray:
        val, ln = need(key)
        arr = _numbers(val, path, ln, dtype)
        if arr.size != width * count:
            raise InputError(f"{path}:{ln}: '{key}' has {arr.size // max(width, 1)} entries, expected {count}")
        return arr.reshape(count, width) if width > 1 else arr

    n_alpha = as_int("alpha_moments_count")
    n_basic = as_int("alpha_index_basic_count")
    n_times = as_int("alpha_index_times_count")
    n_scalar = as_int("alpha_scalar_moments")
    basic = array("alpha_index_basic", int, 4, n_basic)
    times = array("alpha_index_times", int, 4, n_times)
    mapping = array("alpha_moment_mapping", int, 1, n_scalar)
    species_coeffs = array("species_coeffs", float, 1, S)
    moment_coeffs = array("moment_coeffs", float, 1, n_scalar)
    if basic.size and (basic[:, 0].max() >= R or basic.min() < 0):
        raise InputError(f"{path}:{values['alpha_index_basic'][1]}: alpha_index_basic refers to a "
                         f"radial function >= radial_funcs_count = {R}")
    if times.size and (times[:, [0, 1, 3]].max() >= n_alpha or times[:, [0, 1, 3]].min() < 0):
        raise InputError(f"{path}:{values['alpha_index_times'][1]}: alpha_index_times index outside "
                         f"0..alpha_moments_count-1 = {n_alpha - 1}")
    if mapping.size and (mapping.max() >= n_alpha or mapping.min() < 0):
        raise InputError(f"{path}:{values['alpha_moment_mapping'][1]}: alpha_moment_mapping index outside "
                         f"0..{n_alpha - 1}")
    return MTP(
        species_count=S, min_dist=as_float("min_dist"), max_dist=as_float("max_dist"),
        radial_basis_size=B, radial_funcs_count=R, radial_coeffs=radial,
        alpha_moments_count=n_alpha, alpha_index_basic=basic, alpha_index_times=times,
        alpha_moment_mapping=mapping, species_coeffs=species_coeffs, moment_coeffs=moment_coeffs,
        scaling=as_float("scaling", 1.0),
        potential_name=values.get("potential_name", ("MTP", 0))[0],
        potential_tag=values.get("potential_tag", ("", 0))[0],
        version=values.get("version", ("1.1.0", 0))[0],
        radial_basis_type=basis_type, metadata=metadata,
    )


def _f(x: float) -> str:
    return f"{float(x):.16e}"


def _brace(values: Iterable[str]) -> str:
    return "{" + ", ".join(values) + "}"


def format_mtp(mtp: MTP) -> str:
    """`mtp` as the text of an MLIP potential file (.mtp/.almtp layout); metadata lines follow
    the coefficients. Every float has 17 significant digits: parse_mtp(format_mtp(m)) == m."""
    out = ["MTP", f"version = {mtp.version}", f"potential_name = {mtp.potential_name}",
           f"scaling = {_f(mtp.scaling)}", f"species_count = {mtp.species_count}",
           f"potential_tag = {mtp.potential_tag}", f"radial_basis_type = {mtp.radial_basis_type}",
           f"\tmin_dist = {_f(mtp.min_dist)}", f"\tmax_dist = {_f(mtp.max_dist)}",
           f"\tradial_basis_size = {mtp.radial_basis_size}",
           f"\tradial_funcs_count = {mtp.radial_funcs_count}", "\tradial_coeffs"]
    for a in range(mtp.species_count):
        for b in range(mtp.species_count):
            out.append(f"\t\t{a}-{b}")
            for row in mtp.radial_coeffs[a, b]:
                out.append("\t\t\t" + _brace(_f(x) for x in row))
    out += [f"alpha_moments_count = {mtp.alpha_moments_count}",
            f"alpha_index_basic_count = {len(mtp.alpha_index_basic)}",
            "alpha_index_basic = " + _brace(_brace(str(int(v)) for v in r) for r in mtp.alpha_index_basic),
            f"alpha_index_times_count = {len(mtp.alpha_index_times)}",
            "alpha_index_times = " + _brace(_brace(str(int(v)) for v in r) for r in mtp.alpha_index_times),
            f"alpha_scalar_moments = {len(mtp.alpha_moment_mapping)}",
            "alpha_moment_mapping = " + _brace(str(int(v)) for v in mtp.alpha_moment_mapping),
            "species_coeffs = " + _brace(_f(x) for x in mtp.species_coeffs),
            "moment_coeffs = " + _brace(_f(x) for x in mtp.moment_coeffs)]
    for key, val in mtp.metadata.items():
        if not re.fullmatch(r"[A-Za-z_][\w.-]*", key) or "\n" in val:
            raise ValueError(f"metadata key/value not writable: {key!r} = {val!r}")
        out.append(f"{key} = {val}")
    return "\n".join(out) + "\n"


def write_mtp(mtp: MTP, path: PathLike, selection: "MLIPSelection | None" = None) -> None:
    """Write `mtp` in MLIP's text layout (.mtp/.almtp); with `selection`, MLIP's binary
    `#MVS_v1.1` block follows the text (what `mlp train` writes, readable by MLIP)."""
    data = format_mtp(mtp).encode("utf-8")
    if selection is not None:
        data = data.rstrip(b"\n") + format_mlip_selection(selection)
    with atomic_write(path, "wb") as fh:
        fh.write(data)


# ====================================================================== MLIP's selection block (#MVS_v1.1)

@dataclass
class MLIPSelection:
    """MLIP's active set as stored after the potential text (`#MVS_v1.1` block of `mlp train`
    output and `.almtp` files).

    Layout (little-endian doubles): the marker line; five `name value` lines (energy_weight,
    force_weight, stress_weight, site_en_weight, weight_scaling); `#`; the n x n active-set
    matrix A (row k = the k-th active row, d(equation)/d(theta) over all n = CoeffCount
    parameters in the order radial, species, moment coefficients) and MLIP's inverse, stored
    transposed (A^-T); `\\n#\\n`; n lines `configuration equation` linking each active row to a
    selected configuration (-1 -1: an initial row eps * e_k never replaced); `#\\n`; the
    selected configurations as .cfg text.

    `inverse` here is A^-1 itself (grades are max_j |(b A^-1)_j|), taken from the file so that
    grades reproduce MLIP's digits (MLIP updates it by Sherman-Morrison; recomputing it from A,
    whose condition number is often ~1e9, changes the last digits)."""

    matrix: np.ndarray          # (n, n) A
    inverse: np.ndarray         # (n, n) A^-1
    links: np.ndarray           # (n, 2) int: selected-configuration index, equation index
    configurations: list["Configuration"] = field(default_factory=list)
    energy_weight: float = 0.0
    force_weight: float = 0.0
    stress_weight: float = 0.0
    site_en_weight: float = 1.0
    weight_scaling: int = 2

    @property
    def mode(self) -> str:
        """csp's name of the selection mode: 'neighborhood' (site energies only),
        'configuration' (energy only) or 'mixed' (force/stress rows: not gradable by csp)."""
        if self.force_weight == 0.0 and self.stress_weight == 0.0:
            if self.site_en_weight != 0.0 and self.energy_weight == 0.0:
                return "neighborhood"
            if self.energy_weight != 0.0 and self.site_en_weight == 0.0:
                return "configuration"
        return "mixed"


_MVS_WEIGHTS = ("energy_weight", "force_weight", "stress_weight", "site_en_weight", "weight_scaling")


def parse_mlip_selection(block: bytes, n_params: int, source: str = "<bytes>") -> MLIPSelection:
    """Parse a `#MVS_v1.1` block (as split off by `split_mtp_bytes`) for a potential with
    `n_params` coefficients."""
    def bad(msg: str) -> InputError:
        return InputError(f"{source}: MLIP selection block: {msg}")

    if not block.startswith(MVS_MARKER):
        raise bad("does not start with #MVS_v1.1")
    head_end = block.find(b"#", len(MVS_MARKER))
    if head_end < 0:
        raise bad("no '#' after the selection weights")
    tokens = block[len(MVS_MARKER):head_end].decode("ascii", "replace").split()
    if len(tokens) != 10 or tuple(tokens[0::2]) != _MVS_WEIGHTS:
        raise bad(f"expected the weights {', '.join(_MVS_WEIGHTS)}, got '{' '.join(tokens)[:80]}'")
    try:
        w = [float(t) for t in tokens[1::2]]
    except ValueError:
        raise bad("weights are not numbers") from None
    n = int(n_params)
    start = head_end + 1
    stop = start + 2 * n * n * 8
    if len(block) < stop:
        raise bad(f"truncated: {n} x {n} matrices need {2 * n * n * 8} bytes, "
                  f"{max(len(block) - start, 0)} present")
    mats = np.frombuffer(block[start:stop], dtype="<f8").astype(np.float64).reshape(2, n, n)
    tail = block[stop:]
    parts = tail.split(b"#", 2)
    if len(parts) < 3 or parts[0].strip():
        raise bad("no '#' separators after the matrices")
    try:
        links = np.array(parts[1].split(), dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise bad("links are not 'configuration equation' integer pairs") from None
    if len(links) != n:
        raise bad(f"{len(links)} links for {n} active rows")
    try:
        cfg_text = parts[2].decode("utf-8")
    except UnicodeDecodeError:
        raise bad("selected configurations are not text") from None
    configs = parse_cfg(cfg_text, source=f"{source} (selected configurations)")
    return MLIPSelection(matrix=mats[0].copy(), inverse=mats[1].T.copy(), links=links,
                         configurations=configs, energy_weight=w[0], force_weight=w[1],
                         stress_weight=w[2], site_en_weight=w[3], weight_scaling=int(w[4]))


def format_mlip_selection(sel: MLIPSelection) -> bytes:
    """The `#MVS_v1.1` block of `sel` (starting with a newline), as MLIP writes it."""
    n = len(sel.matrix)
    head = ("\n#MVS_v1.1\n"
            f"energy_weight {sel.energy_weight:.16e}\nforce_weight {sel.force_weight:.16e}\n"
            f"stress_weight {sel.stress_weight:.16e}\nsite_en_weight {sel.site_en_weight:.16e}\n"
            f"weight_scaling {int(sel.weight_scaling)}\n#").encode("ascii")
    mats = (np.ascontiguousarray(sel.matrix, dtype="<f8").tobytes()
            + np.ascontiguousarray(np.asarray(sel.inverse).T, dtype="<f8").tobytes())
    links = np.asarray(sel.links, dtype=np.int64).reshape(n, 2)
    text = "\n#\n" + "".join(f"{int(c)} {int(e)}\n" for c, e in links) + "#\n"
    text += "".join(format_cfg(c) + "\n" for c in sel.configurations)
    return head + mats + text.encode("utf-8")


def read_almtp(path: PathLike) -> tuple[MTP, MLIPSelection | None]:
    """A potential file and MLIP's active set stored in it (None if the file has no
    `#MVS_v1.1` block)."""
    with open(path, "rb") as fh:
        text, block = split_mtp_bytes(fh.read())
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text potential file (byte {exc.start} is not UTF-8)") from None
    mtp = parse_mtp(decoded, source=str(path))
    sel = None if block is None else parse_mlip_selection(block, mtp.n_params, source=str(path))
    return mtp, sel


def read_mlip_selection(path: PathLike) -> MLIPSelection | None:
    """MLIP's active set stored in a potential file, or None if it has none."""
    return read_almtp(path)[1]


# ====================================================================== configurations (.cfg)

@dataclass
class Configuration:
    """One MLIP configuration. Positions Cartesian in Å; cell rows are lattice vectors (Å).

    `cell` None means non-periodic. `plus_stress` = -V * stress (ASE sign), eV, xx yy zz yz xz xy.
    `atom_data` holds extra per-atom AtomData columns (e.g. nbh_grades) by column name;
    `features` the Feature lines (name -> value text) in file order.
    """

    cell: np.ndarray | None
    positions: np.ndarray
    types: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    plus_stress: np.ndarray | None = None
    atom_data: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    energy_weight: float | None = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.types = np.asarray(self.types, dtype=np.int64).ravel()
        if self.cell is not None:
            self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if self.plus_stress is not None:
            self.plus_stress = np.asarray(self.plus_stress, dtype=np.float64).ravel()

    @property
    def size(self) -> int:
        """Number of atoms."""
        return int(len(self.types))

    @property
    def volume(self) -> float | None:
        """Cell volume in Å³ (None if non-periodic)."""
        return None if self.cell is None else float(abs(np.linalg.det(self.cell)))


_POS_CART = ("cartes_x", "cartes_y", "cartes_z")
_POS_DIRECT = ("direct_x", "direct_y", "direct_z")
_FORCE = ("fx", "fy", "fz")
_STRESS_ORDER = ("xx", "yy", "zz", "yz", "xz", "xy")


class _Lines:
    """Line reader with 1-based line numbers for error messages."""

    def __init__(self, fh, path: PathLike):
        self.fh, self.path, self.lineno = fh, path, 0

    def next(self) -> str | None:
        line = self.fh.readline()
        if not line:
            return None
        self.lineno += 1
        return line

    def need(self, what: str) -> str:
        line = self.next()
        if line is None:
            raise InputError(f"{self.path}:{self.lineno}: unexpected end of file, expected {what}")
        return line

    def error(self, msg: str) -> InputError:
        return InputError(f"{self.path}:{self.lineno}: {msg}")


def _floats(lines: _Lines, text: str, count: int, what: str) -> np.ndarray:
    try:
        vals = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise lines.error(f"cannot parse {what}: '{text.strip()[:60]}'") from None
    if vals.size != count:
        raise lines.error(f"{what} needs {count} numbers, got {vals.size}")
    return vals


def _read_one(lines: _Lines) -> Configuration:
    size = None
    cell = None
    positions = forces = plus_stress = None
    types = None
    energy = energy_weight = None
    atom_data: dict[str, np.ndarray] = {}
    features: dict[str, str] = {}
    start = lines.lineno
    while True:
        raw = lines.need("END_CFG")
        s = raw.strip()
        if not s:
            continue
        head = s.split()[0].rstrip(":").lower()
        if s == "END_CFG":
            break
        if head == "size":
            try:
                size = int(lines.need("number of atoms").strip())
            except ValueError:
                raise lines.error("Size must be an integer") from None
            if size < 0:
                raise lines.error("Size must be non-negative")
        elif head == "supercell":
            rows = [_floats(lines, lines.need("lattice vector"), 3, "lattice vector") for _ in range(3)]
            cell = np.array(rows)
        elif head == "atomdata":
            if size is None:
                raise lines.error("AtomData before Size")
            cols = s.split(":", 1)[1].split() if ":" in s else s.split()[1:]
            if "type" not in cols:
                raise lines.error("AtomData has no 'type' column")
            header_line = lines.lineno
            block = [lines.need("atom line") for _ in range(size)]
            try:
                table = np.array(" ".join(block).split(), dtype=np.float64)
            except ValueError:
                lines.lineno = header_line
                for k, ln in enumerate(block):
                    try:
                        np.array(ln.split(), dtype=np.float64)
                    except ValueError:
                        lines.lineno = header_line + k + 1
                        raise lines.error(f"cannot parse atom line '{ln.strip()[:60]}'") from None
                raise
            if table.size != size * len(cols):
                for k, ln in enumerate(block):
                    if len(ln.split()) != len(cols):
                        lines.lineno = header_line + k + 1
                        raise lines.error(f"atom line has {len(ln.split())} columns, AtomData header has {len(cols)}")
            table = table.reshape(size, len(cols))
            col = {c: table[:, k] for k, c in enumerate(cols)}
            if any(abs(v - round(v)) > 0 for v in col["type"]):
                lines.lineno = header_line
                raise lines.error("atom types must be integers")
            types = col["type"].astype(np.int64)
            if types.size and types.min() < 0:
                lines.lineno = header_line
                raise lines.error("atom types must be non-negative")
            if all(c in col for c in _POS_CART):
                positions = np.column_stack([col[c] for c in _POS_CART])
            elif all(c in col for c in _POS_DIRECT):
                if cell is None:
                    lines.lineno = header_line
                    raise lines.error("direct coordinates need a Supercell")
                positions = np.column_stack([col[c] for c in _POS_DIRECT]) @ cell
            else:
                lines.lineno = header_line
                raise lines.error("AtomData needs cartes_x/y/z or direct_x/y/z columns")
            if all(c in col for c in _FORCE):
                forces = np.column_stack([col[c] for c in _FORCE])
            used = {"id", "type", *_POS_CART, *_POS_DIRECT, *_FORCE}
            atom_data = {c: col[c].copy() for c in cols if c not in used}
        elif head == "energy":
            energy = float(_floats(lines, lines.need("energy"), 1, "Energy")[0])
        elif head == "energyweight":
            energy_weight = float(_floats(lines, lines.need("energy weight"), 1, "EnergyWeight")[0])
        elif head == "plusstress":
            comps = s.split(":", 1)[1].split() if ":" in s else list(_STRESS_ORDER)
            if sorted(comps) != sorted(_STRESS_ORDER):
                raise lines.error(f"PlusStress components must be {' '.join(_STRESS_ORDER)}")
            vals = _floats(lines, lines.need("PlusStress values"), 6, "PlusStress")
            plus_stress = np.array([vals[comps.index(c)] for c in _STRESS_ORDER])
        elif head == "feature":
            parts = s.split(None, 2)
            if len(parts) < 2:
                raise lines.error("Feature line needs a name")
            features[parts[1]] = parts[2] if len(parts) > 2 else ""
        else:
            raise lines.error(f"unknown line in configuration: '{s[:60]}'")
    if size is None:
        raise InputError(f"{lines.path}:{start}: configuration has no Size")
    if types is None:
        if size:
            raise InputError(f"{lines.path}:{start}: configuration has no AtomData")
        types, positions = np.zeros(0, np.int64), np.zeros((0, 3))
    return Configuration(cell=cell, positions=positions, types=types, energy=energy, forces=forces,
                         plus_stress=plus_stress, atom_data=atom_data, features=features,
                         energy_weight=energy_weight)


def iter_cfg(path: PathLike) -> Iterator[Configuration]:
    """Stream the configurations of an MLIP .cfg file."""
    with open(path, encoding="utf-8") as fh:
        yield from _iter_lines(_Lines(fh, path))


def read_cfg(path: PathLike) -> list[Configuration]:
    """All configurations of an MLIP .cfg file."""
    return list(iter_cfg(path))


def _iter_lines(lines: "_Lines") -> Iterator[Configuration]:
    while True:
        raw = lines.next()
        if raw is None:
            return
        s = raw.strip()
        if not s:
            continue
        if s != "BEGIN_CFG":
            raise lines.error(f"expected BEGIN_CFG, got '{s[:60]}'")
        yield _read_one(lines)


def parse_cfg(text: str, source: str = "<string>") -> list[Configuration]:
    """All configurations in .cfg text (`source` names it in error messages)."""
    import io as _io

    return list(_iter_lines(_Lines(_io.StringIO(text), source)))


def _r(x: float) -> str:
    return repr(float(x))


def _table(header: Sequence[str], columns: Sequence[Sequence[str]], indent: int = 13) -> list[str]:
    widths = [max([len(h)] + [len(v) for v in col]) for h, col in zip(header, columns)]
    head = " AtomData:  " + " ".join(h.rjust(w) for h, w in zip(header, widths))
    rows = [" " * indent + " ".join(col[k].rjust(w) for col, w in zip(columns, widths))
            for k in range(len(columns[0]) if columns else 0)]
    return [head] + rows


def format_cfg(cfg: Configuration) -> str:
    """One configuration as MLIP .cfg text (BEGIN_CFG ... END_CFG), numbers round-trip exact."""
    n = cfg.size
    out = ["BEGIN_CFG", " Size", f"    {n}"]
    if cfg.cell is not None:
        out.append(" Supercell")
        for row in cfg.cell:
            out.append("    " + " ".join(f"{_r(v):>14}" for v in row))
    header = ["id", "type", *_POS_CART]
    cols = [[str(k + 1) for k in range(n)], [str(int(t)) for t in cfg.types]]
    cols += [[_r(v) for v in cfg.positions[:, d]] for d in range(3)]
    if cfg.forces is not None:
        header += list(_FORCE)
        cols += [[_r(v) for v in cfg.forces[:, d]] for d in range(3)]
    for name, arr in cfg.atom_data.items():
        header.append(name)
        cols.append([_r(v) for v in np.asarray(arr).ravel()])
    if n:
        out += _table(header, cols)
    if cfg.energy is not None:
        out += [" Energy", f"    {_r(cfg.energy)}"]
    if cfg.plus_stress is not None:
        vals = [_r(v) for v in cfg.plus_stress]
        w = max(12, *(len(v) for v in vals))
        out.append(" PlusStress:  " + " ".join(c.rjust(w) for c in _STRESS_ORDER))
        out.append("              " + " ".join(v.rjust(w) for v in vals))
    if cfg.energy_weight is not None:
        out += [" EnergyWeight", f"    {_r(cfg.energy_weight)}"]
    for name, val in cfg.features.items():
        out.append(f" Feature   {name}\t{val}")
    out.append("END_CFG")
    return "\n".join(out) + "\n"


def write_cfg(path: PathLike, configs: Iterable[Configuration], append: bool = False) -> None:
    """Write configurations to an MLIP .cfg file (blank line between configurations).
    Without `append` the file is replaced atomically: an error while formatting (or iterating
    `configs`) leaves an existing file untouched."""
    if append:
        with open(path, "a", encoding="utf-8") as fh:
            for cfg in configs:
                fh.write(format_cfg(cfg))
                fh.write("\n")
        return
    with atomic_write(path, "w") as fh:
        for cfg in configs:
            fh.write(format_cfg(cfg))
            fh.write("\n")


# ====================================================================== ase.Atoms conversion

def cfg_to_atoms(cfg: Configuration, species: Sequence[str]):
    """An ase.Atoms for `cfg`; type t becomes species[t]. Energy, forces and stress (eV/Å³,
    = -plus_stress / V) are attached in a SinglePointCalculator; extra AtomData columns go to
    atoms.arrays, Feature lines to atoms.info["features"]."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    species = list(species)
    if cfg.size and int(cfg.types.max()) >= len(species):
        raise InputError(f"configuration has atom type {int(cfg.types.max())} but only "
                         f"{len(species)} species given ({','.join(species)})")
    symbols = [species[t] for t in cfg.types]
    if cfg.cell is None:
        atoms = Atoms(symbols=symbols, positions=cfg.positions, pbc=False)
    else:
        atoms = Atoms(symbols=symbols, positions=cfg.positions, cell=cfg.cell, pbc=True)
    for name, arr in cfg.atom_data.items():
        atoms.arrays[name] = np.asarray(arr, dtype=np.float64).copy()
    if cfg.features:
        atoms.info["features"] = dict(cfg.features)
    if cfg.energy_weight is not None:
        atoms.info["energy_weight"] = cfg.energy_weight
    results = {}
    if cfg.energy is not None:
        results["energy"] = cfg.energy
        results["free_energy"] = cfg.energy
    if cfg.forces is not None:
        results["forces"] = cfg.forces.copy()
    if cfg.plus_stress is not None and cfg.cell is not None:
        results["stress"] = -cfg.plus_stress / cfg.volume
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def atoms_to_cfg(atoms, species: Sequence[str]) -> Configuration:
    """A Configuration for `atoms`; symbol species[t] becomes type t. Stored results of
    atoms.calc (energy, forces, stress) are copied without triggering a calculation."""
    species = list(species)
    index = {s: k for k, s in enumerate(species)}
    try:
        types = np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64)
    except KeyError as exc:
        raise InputError(f"structure {atoms.get_chemical_formula()}: element {exc.args[0]} "
                         f"not among species {','.join(species)}") from None
    periodic = bool(np.any(atoms.pbc))
    cell = np.array(atoms.cell[:]) if periodic else None
    energy = forces = plus_stress = None
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if "energy" in results:
        energy = float(results["energy"])
    if "forces" in results:
        forces = np.array(results["forces"], dtype=np.float64)
    if "stress" in results and periodic:
        stress = np.asarray(results["stress"], dtype=np.float64)
        if stress.shape == (3, 3):
            stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        plus_stress = -stress * atoms.get_volume()
    skip = {"numbers", "positions", "tags", "masses", "momenta", "initial_magmoms", "initial_charges"}
    atom_data = {k: np.asarray(v, dtype=np.float64).copy() for k, v in atoms.arrays.items()
                 if k not in skip and np.ndim(v) == 1 and np.issubdtype(np.asarray(v).dtype, np.number)}
    features = {str(k): str(v) for k, v in atoms.info.get("features", {}).items()}
    return Configuration(cell=cell, positions=atoms.get_positions(), types=types, energy=energy,
                         forces=forces, plus_stress=plus_stress, atom_data=atom_data,
                         features=features, energy_weight=atoms.info.get("energy_weight"))
