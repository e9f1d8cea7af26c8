"""Brute-force EMT truth for a csp candidate pool: relax everything, build the hull.

    nice -n 15 python bench/truth.py bench/truths/cu-pd.yaml [--fmax 0.005] [--max-steps 1000]
    python bench/truth.py --show bench/truths/cu-pd.json.gz      # print the summary of a finished truth

The pool is exactly what `csp run` generates for the search file (`csp.campaign.generate.
generate_candidates`, same structures, order and provenance). Every candidate is relaxed with
ASE's EMT (BFGS on FrechetCellFilter, fmax 0.005 eV/Å, at most 1000 steps), one process, and
the hull is built with `csp.hull.build_hull` (pymatgen). Output: `<yaml stem>.json.gz` next to
the YAML (gzip JSON): per-candidate records (key, index, formula, composition, natoms, energy
per atom, formation energy and e_above_hull in eV/atom, converged, steps, relaxed structure),
the hull phases, the YAML text, the EMT settings, the date and the CPU time.

Resumable: partial results go to `<yaml stem>.partial.json.gz` every `--checkpoint` structures
(default 200); a rerun continues from there (the YAML text and settings must be unchanged).

The structure key (`structure_key`) is the canonical name of a candidate from its provenance
(enumerated: `enumerate|fcc|1,0,1,0,0,2|ab`), the same for the truth and for csp's store, so
bench/funnel.py maps campaign candidates to truth records with it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

NEAR = (0.010, 0.025, 0.050, 0.100)  # eV/atom thresholds for the summary
_SKIP_INFO = {"source", "candidate_id", "id", "energy", "free_energy", "stress", "forces"}


def _canon(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ",".join(_canon(v) for v in value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def structure_key(info: dict) -> str:
    """Canonical string naming a candidate by its provenance (independent of store/in-memory
    representation: numpy arrays and JSON lists give the same key)."""
    source = str(info.get("source", "unknown"))
    if source == "enumerate" and {"lattice", "hnf", "labeling"} <= set(info):
        return f"enumerate|{_canon(info['lattice'])}|{_canon(info['hnf'])}|{_canon(info['labeling'])}"
    rest = sorted((k, _canon(v)) for k, v in info.items() if k not in _SKIP_INFO)
    return source + "|" + "|".join(f"{k}={v}" for k, v in rest)


def emt_settings(fmax: float, max_steps: int) -> dict:
    import ase

    return {"calculator": "ase.calculators.emt.EMT", "optimizer": "ase.optimize.BFGS",
            "filter": "ase.filters.FrechetCellFilter", "fmax": fmax, "max_steps": max_steps,
            "ase_version": ase.__version__}


def relax_emt(atoms, fmax: float, max_steps: int) -> dict:
    """Relax positions and cell with EMT; returns the record fields (energies eV/atom)."""
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    a = atoms.copy()
    a.info = {}
    a.calc = EMT()
    t0 = time.process_time()
    err = ""
    try:
        opt = BFGS(FrechetCellFilter(a), logfile=None)
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
        steps = int(opt.nsteps)
        energy = float(a.get_potential_energy())
    except Exception as exc:  # EMT rarely fails; keep going and flag it
        converged, steps, energy, err = False, -1, float("nan"), f"{type(exc).__name__}: {exc}"
    rec = {"energy_per_atom": energy / len(a), "converged": converged, "steps": steps,
           "cpu_s": round(time.process_time() - t0, 4),
           "structure": {"numbers": a.numbers.tolist(),
                         "cell": np.round(a.cell.array, 6).tolist(),
                         "positions": np.round(a.positions, 6).tolist()}}
    if err:
        rec["error"] = err
    return rec


def composition(atoms) -> dict[str, int]:
    comp: dict[str, int] = {}
    for s in atoms.get_chemical_symbols():
        comp[s] = comp.get(s, 0) + 1
    return comp


def write_gz(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)


def read_gz(path: str | os.PathLike) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def add_hull(truth: dict) -> None:
    """Fill formation energies, e_above_hull and the hull phases from the records (in place)."""
    from csp.hull import HullEntry, build_hull

    recs = [r for r in truth["records"] if np.isfinite(r["energy_per_atom"])]
    entries = [HullEntry(id=str(r["index"]), composition={k: float(v) for k, v in r["composition"].items()},
                         energy=r["energy_per_atom"] * r["natoms"]) for r in recs]
    hull = build_hull(entries, elements=truth["elements"])
    by_id = {row.id: row for row in hull.rows}
    for r in truth["records"]:
        row = by_id.get(str(r["index"]))
        r["formation_energy"] = None if row is None else row.formation_energy_per_atom
        r["e_above_hull"] = None if row is None else row.e_above_hull
        r["stable"] = bool(row is not None and row.stable)
    truth["hull"] = [{"index": int(row.id), "key": truth["records"][int(row.id)]["key"], "formula": row.formula,
                      "composition": row.composition, "natoms": row.natoms,
                      "energy_per_atom": row.energy_per_atom, "formation_energy": row.formation_energy_per_atom,
                      "depth": _depth(entries, row, truth["elements"])}
                     for row in hull.stable()]
    truth["near_hull_counts"] = {f"{int(1000 * t)}meV": int(sum(
        r["e_above_hull"] is not None and r["e_above_hull"] <= t + 1e-9 for r in truth["records"])) for t in NEAR}


def _depth(entries, row, elements) -> float | None:
    """How far (eV/atom) a hull phase lies below the hull built without its composition
    (None for an element): a phase only a fraction of a meV deep is fragile to any error."""
    from csp.hull import build_hull

    def frac(c):
        tot = sum(c.values())
        return tuple(sorted((el, round(v / tot, 6)) for el, v in c.items() if v))

    key = frac(row.composition)
    if len(key) == 1:
        return None
    rest = [e for e in entries if frac(e.composition) != key]
    other = build_hull(rest, elements=elements)
    fc = {k: v for k, v in row.composition.items() if v}
    return float(other.hull_energy(fc) - row.formation_energy_per_atom)


def summary(truth: dict) -> str:
    recs = truth["records"]
    lines = [f"truth {truth['name']}: {len(recs)} candidates ({', '.join(truth['elements'])}), "
             f"{sum(not r['converged'] for r in recs)} not converged, CPU {truth.get('cpu_seconds', 0):.0f} s"]
    lines.append(f"hull phases ({len(truth['hull'])}):")
    for h in truth["hull"]:
        depth = "" if h.get("depth") is None else f"  ({1000 * h['depth']:.2f} below the hull without it)"
        lines.append(f"  {h['formula']:>10}  N={h['natoms']:<2d} E_f = {1000 * h['formation_energy']:8.2f} meV/atom"
                     f"{depth}   [{h['index']}] {h['key']}")
    eh = np.array([r["e_above_hull"] for r in recs if r["e_above_hull"] is not None])
    lines.append("within the hull (meV/atom above it): " + ", ".join(
        f"{int(1000 * t)} meV: {int(np.sum(eh <= t + 1e-9))}" for t in NEAR))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("yaml", help="search YAML (bench/truths/<name>.yaml), or a .json.gz with --show")
    ap.add_argument("--fmax", type=float, default=0.005)
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--checkpoint", type=int, default=200, help="write partial results every N structures")
    ap.add_argument("--out", help="output path (default: <yaml stem>.json.gz next to the YAML)")
    ap.add_argument("--show", action="store_true", help="print the summary of an existing truth file")
    ap.add_argument("--rehull", action="store_true",
                    help="recompute the hull fields of an existing truth file (no relaxation) and print it")
    args = ap.parse_args(argv)

    if args.show or args.rehull:
        truth = read_gz(args.yaml)
        if args.rehull:
            add_hull(truth)
            write_gz(Path(args.yaml), truth)
        print(summary(truth))
        return 0

    from csp.campaign.generate import generate_candidates
    from csp.config import load_search

    ypath = Path(args.yaml)
    yaml_text = ypath.read_text()
    search = load_search(ypath)
    stem = ypath.name[:-5] if ypath.name.endswith(".yaml") else ypath.stem
    out = Path(args.out) if args.out else ypath.with_name(stem + ".json.gz")
    partial = out.with_name(out.name.replace(".json.gz", "") + ".partial.json.gz")
    settings = emt_settings(args.fmax, args.max_steps)

    t0 = time.process_time()
    pool = generate_candidates(search, log=lambda m: print(m, flush=True))
    gen_cpu = time.process_time() - t0
    keys = [structure_key(a.info) for a in pool]
    if len(set(keys)) != len(keys):
        raise SystemExit("structure keys are not unique in this pool")
    print(f"{len(pool)} candidates (generated in {gen_cpu:.1f} s CPU)", flush=True)

    truth = {"name": search.name, "elements": list(search.elements), "yaml": yaml_text, "emt": settings,
             "n_candidates": len(pool), "records": [], "cpu_seconds": 0.0}
    if partial.exists():
        old = read_gz(partial)
        if old["yaml"] != yaml_text or old["emt"] != settings:
            raise SystemExit(f"{partial}: made with another YAML or other settings; delete it to start again")
        if [r["key"] for r in old["records"]] != keys[:len(old["records"])]:
            raise SystemExit(f"{partial}: pool differs from the current one (csp changed?); delete it")
        truth = old
        print(f"resuming after {len(truth['records'])} structures", flush=True)

    cpu_before = truth["cpu_seconds"]
    t_start = time.process_time()
    since = 0
    for i in range(len(truth["records"]), len(pool)):
        atoms = pool[i]
        rec = {"index": i, "key": keys[i], "formula": atoms.get_chemical_formula(),
               "composition": composition(atoms), "natoms": len(atoms)}
        rec.update(relax_emt(atoms, args.fmax, args.max_steps))
        truth["records"].append(rec)
        since += 1
        done = len(truth["records"])
        if since >= args.checkpoint or done == len(pool):
            truth["cpu_seconds"] = cpu_before + time.process_time() - t_start
            write_gz(partial, truth)
            since = 0
            print(f"  {done}/{len(pool)} relaxed, CPU {truth['cpu_seconds']:.0f} s, "
                  f"{sum(not r['converged'] for r in truth['records'])} not converged", flush=True)
    truth["cpu_seconds"] = cpu_before + time.process_time() - t_start
    add_hull(truth)
    truth["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_gz(out, truth)
    if partial.exists():
        partial.unlink()
    print(summary(truth))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
