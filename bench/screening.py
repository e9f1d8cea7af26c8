"""The screening funnel on brute-force EMT truths: `csp run` with default screening on each truth's
pool, then `bench/funnel.py` against the truth; one markdown table for docs/benchmarks.md.

    python bench/screening.py cu-pt cu-pd ni-pt --out /tmp/screening [--mpirun 2] [--json all.json]

Each name is a truth in bench/truths/ (<name>.yaml and <name>.json.gz, made by bench/truth.py).
Columns: candidates; per stage kept (% of candidates), σ audited (90 % bound) and the bound
used, next to the true RMSE (composition-linear part removed) of that stage's MTP on its relaxed
candidates near the truth hull; reference single points; reference relaxations; distinct
candidates given any reference call; recall (exact phases found within 2 meV/atom, and
covered: csp's hull at or below every truth phase); CPU and wall time of the campaign; peak
resident memory of its largest process (GNU time, when /usr/bin/time exists).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import funnel as funnel_mod  # noqa: E402


def run_one(name: str, out: Path, mpirun: int) -> dict:
    yaml_path = HERE / "truths" / f"{name}.yaml"
    truth = HERE / "truths" / f"{name}.json.gz"
    run_dir = out / name
    cmd = [sys.executable, "-m", "csp", "run", str(yaml_path), "--run-dir", str(run_dir), "--quiet"]
    if mpirun > 1:
        cmd = ["mpirun", "-n", str(mpirun)] + cmd
    timer = Path("/usr/bin/time")
    if timer.exists():   # peak resident memory of the largest process of this run (kB)
        cmd = [str(timer), "-f", "PEAK_RSS_KB %M"] + cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: csp run failed:\n{proc.stderr[-3000:]}")
    data, _ = funnel_mod.funnel(str(run_dir), str(truth))
    data["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    data["wall_seconds"] = wall
    peak = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    data["peak_rss_mb"] = int(peak[-1]) / 1024 if peak else None
    data["name"] = name
    return data


def row(d: dict) -> str:
    n = d["candidates"]
    cells = [d["name"], str(n)]
    true = {e["stage"]: e["near_hull"].get("sigma_lin") for e in d.get("mtp_error", [])}
    floor = {h["stage"]: h for h in d.get("hindsight", [])}
    stages = []
    for s in d["stages"]:
        info = s.get("screened") or {}
        em = info.get("error_model") or {}
        h = floor.get(s["stage"], {})
        stages.append(f"{s['kept']} ({100 * s['kept'] / n:.0f} %): σ {_mev(em.get('sigma'))}, bound "
                      f"{_mev(info.get('bound'))}; true {_mev(true.get(s['stage']))}; floor {_mev(h.get('window'))}"
                      f" → {h.get('kept', '?')}")
    cells.append("<br>".join(stages))
    ref = d["reference"]
    cells += [f"{ref['single_points']} ({100 * ref['single_points'] / n:.0f} %)",
              f"{ref['relaxations']} ({100 * ref['relaxations'] / n:.0f} %)",
              f"{ref['distinct_candidates']} ({100 * ref['distinct_candidates'] / n:.0f} %)",
              f"{d['recall']['found']}/{d['recall']['total']} found, {d['recall'].get('covered', '?')}/"
              f"{d['recall']['total']} covered",
              f"{d['cpu_seconds'] / 60:.1f} / {d['wall_seconds'] / 60:.1f}",
              "n/a" if d.get("peak_rss_mb") is None else f"{d['peak_rss_mb']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def _mev(x) -> str:
    return "n/a" if x is None else f"{1000 * float(x):.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--out", default="/tmp/csp-screening")
    ap.add_argument("--mpirun", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    print("| truth | candidates | per stage: kept; σ audited, bound used; true RMSE near the hull; hindsight "
          "floor → kept (meV/atom) | reference "
          "single points | reference relaxations | candidates with any reference call | recall | CPU / wall min |"
          " peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.names:
        d = run_one(name, out, args.mpirun)
        results.append(d)
        print(row(d), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
