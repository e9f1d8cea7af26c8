"""The screening funnel of a csp campaign, judged against a brute-force EMT truth (bench/truth.py).

    python bench/funnel.py RUN_DIR TRUTH.json.gz [--json out.json] [--tol 0.002]

Reads the campaign store of RUN_DIR (finished or still running) and prints:
  - candidates; per stage: relaxed, kept (count, % of candidates, % of the stage's input), the
    numbers the stage recorded in `stage{i}/screened` (window, sigma, bound, error_model, ...),
    the stage's last potential (level, rounds, training set, sigma);
  - reference single points and relaxations (counts, % of candidates), distinct candidates
    that got any reference call;
  - recall: every truth hull phase needs a csp final-hull phase (reference relaxations only) at
    the same reduced composition with |ΔE_f| < tol (2 meV/atom); missed phases with their truth
    E_f and where their candidates were dropped (stage, distance above that stage's MTP hull);
    also, per stage, how many truth phases still have a candidate alive;
  - the true MTP error per stage: EMT single point at every MTP-relaxed geometry vs the MTP
    energy (RMSE, p95 |err|, max |err|, bias; all and within 50 meV/atom of the truth hull),
    beside the sigma / bound the stage used;
  - hindsight: per stage, the smallest window above that stage's MTP hull that keeps every truth
    hull phase, and the fraction of the stage it keeps.

Candidates are mapped to truth records by their structure key (provenance, see
bench/truth.py `structure_key`). A truth phase counts as kept by a stage when any candidate at
its composition whose truth energy is within `tol` of the truth hull is kept (structures that
relax to the same EMT minimum are interchangeable); the exact structure is reported too.
Energies: eV/atom inside, meV/atom printed.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from truth import read_gz, structure_key  # noqa: E402

from csp.relax import USABLE as RELAXED  # noqa: E402 (stage-result statuses with an energy the screening uses)
ENERGY_KEYS = ("window", "sigma", "bound", "rmse", "bias", "q95", "p95", "max")  # step-info keys in eV/atom
NEAR_TRUTH = 0.050  # eV/atom: "near the truth hull" for the error statistics


def reduced(comp: dict) -> tuple:
    """Hashable reduced composition (atomic fractions rounded) of {element: amount}."""
    tot = float(sum(v for v in comp.values()))
    return tuple(sorted((el, round(float(v) / tot, 6)) for el, v in comp.items() if v))


def comp_of(atoms) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in atoms.get_chemical_symbols():
        out[s] = out.get(s, 0) + 1
    return out


def mev(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{1000 * x:.1f}"


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "n/a"


def above_mtp_hull(results, elements) -> dict[int, float]:
    """eV/atom above the MTP hull of one stage's relaxed results (lowest energy per composition)."""
    from csp.hull import HullEntry, build_hull

    best: dict[tuple, tuple[dict, float]] = {}
    rows = []
    for r in results:
        comp = comp_of(r.atoms)
        key = reduced(comp)
        rows.append((r.candidate_id, comp, r.energy_per_atom))
        if key not in best or r.energy_per_atom < best[key][1]:
            best[key] = (comp, r.energy_per_atom)
    entries = [HullEntry(id=str(i), composition={k: float(v) for k, v in c.items()}, energy=e * sum(c.values()))
               for i, (c, e) in enumerate(best.values())]
    hull = build_hull(entries, elements)
    out = {}
    for cid, comp, e in rows:
        fc = {k: float(v) for k, v in comp.items()}
        out[cid] = float(hull.formation_energy(fc, e) - hull.hull_energy(fc))
    return out


def _is_energy(key: str) -> bool:
    parts = key.split(".")
    return parts[-1] in ENERGY_KEYS or (len(parts) > 2 and parts[-2] == "mu")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x != 0


class _Res:
    """Minimal stand-in for a StageResult (candidate_id, atoms, energy_per_atom)."""

    def __init__(self, candidate_id, atoms, energy_per_atom):
        self.candidate_id, self.atoms, self.energy_per_atom = candidate_id, atoms, energy_per_atom


def err_stats(errs, fracs=None) -> dict:
    """RMSE, p95 |e|, max |e|, bias (mean) of errors e (eV/atom); with `fracs` (atomic fractions,
    one row per error) also `sigma_lin`: the RMSE after removing a least-squares composition-linear
    part (a shift per element, which moves no energy above the hull; csp's audit does the same)."""
    e = np.asarray(errs, dtype=float)
    if e.size == 0:
        return {"n": 0}
    a = np.abs(e)
    out = {"n": int(e.size), "rmse": float(np.sqrt(np.mean(e ** 2))), "p95": float(np.percentile(a, 95)),
           "max": float(a.max()), "bias": float(e.mean())}
    if fracs is not None:
        X = np.asarray(fracs, dtype=float).reshape(e.size, -1)
        mu = np.linalg.lstsq(X, e, rcond=None)[0] if e.size >= 3 * X.shape[1] else np.zeros(X.shape[1])
        out["sigma_lin"] = float(np.sqrt(np.mean((e - X @ mu) ** 2)))
    return out


def fmt_stats(s: dict) -> str:
    if not s.get("n"):
        return "n=0"
    return (f"n={s['n']:<5d} RMSE {mev(s['rmse']):>6}  p95 {mev(s['p95']):>6}  max {mev(s['max']):>6}  "
            f"bias {mev(s['bias']):>6}" + (f"  RMSE-lin {mev(s['sigma_lin']):>6}" if "sigma_lin" in s else ""))


def flat_numbers(d, prefix="") -> dict:
    """Numeric leaves of a (nested) step-info dict, keys joined with '.'."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat_numbers(v, f"{prefix}{k}."))
    elif isinstance(d, bool):
        pass
    elif isinstance(d, (int, float)):
        out[prefix[:-1]] = d
    return out


def stage_numbers(store) -> list[int]:
    """Screening stages (1-based) with results or a screened step."""
    out, i, misses = [], 1, 0
    while misses < 3 and i < 50:
        if store.stage_results(i) or store.step_info(f"stage{i}/screened") is not None:
            out.append(i)
            misses = 0
        else:
            misses += 1
        i += 1
    return out


def final_hull(store, elements):
    """csp's final hull: build_hull over the successful reference relaxations; else meta 'hull'.
    Returns (list of phases {id, composition (fractions), formation_energy}, source)."""
    from csp.hull import HullEntry, build_hull

    entries = []
    for rec in store.reference_calls("relax"):
        if rec.ok and rec.atoms is not None and rec.energy is not None:
            entries.append(HullEntry(id=str(rec.candidate_id if rec.candidate_id is not None else rec.key),
                                     composition={k: float(v) for k, v in comp_of(rec.atoms).items()},
                                     energy=float(rec.energy)))
    if entries:
        try:
            hull = build_hull(entries, elements)
            return ([{"id": r.id, "formula": r.formula, "composition": r.composition,
                      "formation_energy": r.formation_energy_per_atom} for r in hull.stable()], "reference relaxations")
        except Exception as exc:  # e.g. no elemental reference among the survivors
            note = f"build_hull failed: {exc}"
    else:
        note = "no successful reference relaxations"
    meta = store.get_meta("hull")
    if meta:
        return ([{"id": r["id"], "formula": r["formula"], "composition": r["composition"],
                  "formation_energy": r["formation_energy_per_atom"]} for r in meta], "store meta 'hull'")
    return [], note


def hull_energy_function(rows, elements):
    """Formation energy (eV/atom) of the hull through `rows` (stable phases: composition,
    formation_energy) at any composition; None if the rows do not span the elements."""
    from csp.hull import HullEntry, build_hull

    if not rows:
        return None
    entries = [HullEntry(id=str(r["id"]), composition={k: float(v) for k, v in r["composition"].items() if v},
                         energy=float(r["formation_energy"])) for r in rows]
    try:
        hull = build_hull(entries, elements)
    except Exception:
        return None
    return lambda comp: float(hull.hull_energy({k: float(v) for k, v in comp.items() if v}))


def funnel(run_dir: str, truth_path: str, tol: float = 0.002, emt_errors: bool = True) -> tuple[dict, str]:
    from csp.campaign.store import CampaignStore

    truth = read_gz(truth_path)
    elements = list(truth["elements"])
    trec = {r["key"]: r for r in truth["records"]}
    lines: list[str] = []
    p = lines.append
    out: dict = {"run_dir": str(run_dir), "truth": str(truth_path), "truth_name": truth["name"], "tol": tol}

    store = CampaignStore(run_dir)
    cands = store.candidates()
    n = len(cands)
    key_of = {cid: structure_key(a.info) for cid, a in cands}
    cid_of = {k: cid for cid, k in key_of.items()}
    mapped = sum(k in trec for k in key_of.values())
    out["candidates"] = n
    out["mapped_to_truth"] = mapped
    p(f"run {run_dir}  ({store.get_meta('name')}; truth {truth['name']}: {len(trec)} structures, "
      f"{len(truth['hull'])} hull phases)")
    p(f"candidates: {n}   mapped to truth records: {mapped}"
      + ("" if mapped == n and n == len(trec) else "   (pool differs from the truth's!)"))

    # equivalents of each truth phase: truth records at its composition within tol of the hull
    phases = []
    for h in truth["hull"]:
        rc = reduced(h["composition"])
        eq = [r["key"] for r in truth["records"] if r["e_above_hull"] is not None
              and r["e_above_hull"] <= tol and reduced(r["composition"]) == rc]
        phases.append({"formula": h["formula"], "key": h["key"], "rc": rc, "formation_energy": h["formation_energy"],
                       "depth": h.get("depth"),
                       "composition": h["composition"], "equivalents": eq, "cids": [cid_of[k] for k in eq if k in cid_of]})

    # stages --------------------------------------------------------------------------------
    stages = stage_numbers(store)
    out["stages"] = []
    prev_input = n
    kept_sets: dict[int, set] = {}
    stage_data = {}
    p("")
    p("stage  relaxed  statuses                           kept (of cands / of input)")
    for i in stages:
        res = store.stage_results(i)
        ok = [r for r in res if r.status in RELAXED and r.energy_per_atom is not None and r.atoms is not None]
        statuses: dict[str, int] = {}
        for r in res:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        kept = set(store.kept_ids(i))
        kept_sets[i] = kept
        info = store.step_info(f"stage{i}/screened")
        nums = flat_numbers(info) if info is not None else {}
        pots = store.potentials(i)
        last = pots[-1] if pots else None
        rec_txt = "  ".join(f"{k}={mev(v)} meV" if _is_energy(k) else f"{k}={v:g}"
                            for k, v in nums.items() if k not in ("relaxed", "kept"))
        screened = info is not None
        p(f"{i:>5}  {len(ok):>7}  {json.dumps(statuses):<34} "
          + (f"{len(kept):>5} ({pct(len(kept), n):>6} / {pct(len(kept), prev_input):>6})" if screened else "    -"))
        p("       recorded: " + (rec_txt if screened else "(not screened yet)"))
        if last is not None:
            ex = last.get("extra") or {}
            extra_txt = "  ".join(f"{k}={mev(v)} meV" for k, v in ex.items()
                                  if isinstance(v, float) and k.startswith(("cv_rmse", "rmse")))
            p(f"       potential: level {last['level']}, {len(pots)} rounds, training set {last['n_train']}, "
              f"sigma {mev(last['sigma'])} meV  {extra_txt}")
        stage_data[i] = {"results": res, "ok": ok, "info": info, "kept": kept}
        out["stages"].append({"stage": i, "relaxed": len(ok), "statuses": statuses,
                              "kept": len(kept) if screened else None, "screened": info,
                              "potential": None if last is None else {
                                  "level": last["level"], "rounds": len(pots), "n_train": last["n_train"],
                                  "sigma": last["sigma"], "extra": last.get("extra")}})
        if screened:
            prev_input = len(kept)

    # reference calls -------------------------------------------------------------------------
    sp = store.reference_calls("single_point")
    rx = store.reference_calls("relax")
    touched = {r.candidate_id for r in sp + rx if r.candidate_id is not None}
    nfail = sum(not r.ok for r in sp + rx)
    p("")
    p(f"reference single points: {len(sp)} ({pct(len(sp), n)} of candidates)   "
      f"relaxations: {len(rx)} ({pct(len(rx), n)})   failed: {nfail}")
    p(f"distinct candidates with any reference call: {len(touched)} ({pct(len(touched), n)})")
    out["reference"] = {"single_points": len(sp), "relaxations": len(rx), "failed": nfail,
                        "distinct_candidates": len(touched)}

    # MTP hull distances per stage (for hindsight and for the fate of missed phases) ----------
    above: dict[int, dict[int, float]] = {}
    for i in stages:
        ok = stage_data[i]["ok"]
        try:
            above[i] = above_mtp_hull(ok, elements) if ok else {}
        except Exception as exc:  # no pure element relaxed yet, ...
            above[i] = {}
            p(f"stage {i}: no MTP hull ({exc})")

    # recall ----------------------------------------------------------------------------------
    hull_rows, source = final_hull(store, elements)
    p("")
    p(f"recall (final hull from {source}; |dE_f| < {1000 * tol:g} meV/atom at the same composition):")
    recall = []
    for ph in phases:
        match = [h for h in hull_rows if reduced(h["composition"]) == ph["rc"]]
        best = min(match, key=lambda h: abs(h["formation_energy"] - ph["formation_energy"]), default=None)
        d = None if best is None else best["formation_energy"] - ph["formation_energy"]
        hit = d is not None and abs(d) < tol
        fate = []
        for i in stages:
            sd = stage_data[i]
            present = [c for c in ph["cids"] if any(r.candidate_id == c for r in sd["ok"])]
            kept = [c for c in present if c in sd["kept"]]
            dist = [above[i].get(c) for c in present if above[i].get(c) is not None]
            cid = cid_of.get(ph["key"])
            fate.append({"stage": i, "equivalents_relaxed": len(present), "equivalents_kept": len(kept),
                         "exact_kept": cid in sd["kept"],
                         "exact_above_mtp_hull": above[i].get(cid), "best_above_mtp_hull": min(dist) if dist else None,
                         "screened": sd["info"] is not None})
        recall.append({"formula": ph["formula"], "key": ph["key"], "truth_formation_energy": ph["formation_energy"],
                       "depth": ph["depth"],
                       "csp_formation_energy": None if best is None else best["formation_energy"],
                       "csp_id": None if best is None else best["id"], "dE_f": d, "found": hit,
                       "n_equivalents": len(ph["equivalents"]), "stages": fate})
    # a truth phase the csp hull does not contain can still be "covered": csp's own hull passes at
    # or below it (within tol) because csp's reference relaxations found lower structures nearby
    # (a relaxation from the MTP-relaxed geometry may end in a lower minimum than the brute
    # force's from the Vegard cell); nothing that would lower csp's hull was missed
    h_csp = hull_energy_function(hull_rows, elements)
    for r, ph in zip(recall, phases):
        at = h_csp(ph["composition"]) if h_csp is not None else None
        r["csp_hull_at_composition"] = at
        r["covered"] = bool(r["found"] or (at is not None and at <= ph["formation_energy"] + tol))
    nfound = sum(r["found"] for r in recall)
    ncovered = sum(r["covered"] for r in recall)
    for r in recall:
        status = "found " if r["found"] else ("covrd " if r["covered"] else "MISSED")
        p(f"  {status} {r['formula']:>10}  truth E_f {mev(r['truth_formation_energy']):>7}  "
          f"csp {mev(r['csp_formation_energy']):>7} (id {r['csp_id']})  dE_f {mev(r['dE_f']):>6}  "
          f"[{r['n_equivalents']} equivalent candidate(s)"
          + ("" if r["depth"] is None else f", {mev(r['depth'])} meV below the hull without it") + "]")
        if not r["found"]:
            for f in r["stages"]:
                if not f["screened"]:
                    continue
                p(f"         stage {f['stage']}: exact structure {'kept' if f['exact_kept'] else 'dropped'} "
                  f"({mev(f['exact_above_mtp_hull'])} meV above the MTP hull); equivalents relaxed "
                  f"{f['equivalents_relaxed']}, kept {f['equivalents_kept']}, closest {mev(f['best_above_mtp_hull'])} meV")
    matched = [abs(r["dE_f"]) for r in recall if r["found"]]
    p(f"recall: {nfound}/{len(recall)} truth hull phases"
      + (f"; max |dE_f| on found phases {mev(max(matched))} meV/atom" if matched else "")
      + f"; covered (csp's hull at or below the phase, within {1000 * tol:g} meV/atom): {ncovered}/{len(recall)}")
    for r in recall:
        if r["covered"] and not r["found"]:
            p(f"  covered: {r['formula']} truth E_f {mev(r['truth_formation_energy'])}, csp hull there "
              f"{mev(r['csp_hull_at_composition'])} meV/atom")
    tkeys = {reduced(ph["composition"]) for ph in truth["hull"]}
    extra = [h for h in hull_rows if reduced(h["composition"]) not in tkeys]
    if extra:
        p("csp hull phases at compositions not on the truth hull: "
          + ", ".join(f"{h['formula']} ({mev(h['formation_energy'])})" for h in extra))
    # csp phases below the truth hull: the campaign found lower minima than the brute force (a
    # relaxation from the MTP geometry can reach a basin EMT from the ideal cell does not; e.g.
    # Cu-Pt fcc<=8, candidate Cu6Pt2 P2_1/m -> Pmmn, 1.6 meV/atom below the truth's Cu3Pt)
    h_truth = hull_energy_function([dict(h, id=h["index"]) for h in truth["hull"]], elements)
    below = []
    if h_truth is not None:
        for h in hull_rows:
            d = h["formation_energy"] - h_truth(h["composition"])
            if d < -0.0005:
                below.append({"formula": h["formula"], "id": h["id"], "formation_energy": h["formation_energy"],
                              "below_truth_hull": -d})
    if below:
        p("csp hull phases below the truth hull (truth incomplete there): "
          + ", ".join(f"{b['formula']} (id {b['id']}, {mev(b['below_truth_hull'])} meV/atom below)" for b in below))
    out["below_truth_hull"] = below
    alive = []
    for i in stages:
        if stage_data[i]["info"] is None:
            continue
        k = sum(any(c in stage_data[i]["kept"] for c in ph["cids"]) for ph in phases)
        alive.append(f"stage {i}: {k}/{len(phases)}")
    if alive:
        p("truth phases with an equivalent candidate kept: " + "   ".join(alive))
    out["recall"] = {"found": nfound, "covered": ncovered, "total": len(recall), "phases": recall, "hull_source": source,
                     "max_abs_dE_f": max(matched) if matched else None,
                     "extra_csp_phases": [h["formula"] for h in extra]}

    # true MTP error ---------------------------------------------------------------------------
    if emt_errors:
        from ase.calculators.emt import EMT

        p("")
        p("true MTP error (EMT at the MTP-relaxed geometry vs MTP energy, meV/atom; err = MTP - EMT;")
        p("  RMSE-lin: after removing a composition-linear shift, as csp's sigma; d(above hull): error of the")
        p("  distance above the hull, MTP vs EMT, both hulls built from the same stage results):")
        out["mtp_error"] = []
        for i in stages:
            ok = stage_data[i]["ok"]
            errs, fr, near, fr_near, emt_e = [], [], [], [], {}
            for r in ok:
                a = r.atoms.copy()
                a.calc = EMT()
                e_ref = a.get_potential_energy() / len(a)
                emt_e[r.candidate_id] = e_ref
                err = r.energy_per_atom - e_ref
                c = comp_of(r.atoms)
                f = [c.get(el, 0) / len(r.atoms) for el in elements]
                errs.append(err)
                fr.append(f)
                t = trec.get(key_of.get(r.candidate_id))
                if t is not None and t["e_above_hull"] is not None and t["e_above_hull"] <= NEAR_TRUTH:
                    near.append(err)
                    fr_near.append(f)
            s_all, s_near = err_stats(errs, fr), err_stats(near, fr_near)
            info = stage_data[i]["info"] or {}
            # where the window is decided: within three bounds of the stage's own MTP hull
            reach = 3.0 * info["bound"] if _finite(info.get("bound")) else None
            window_ids = [k for k, r in enumerate(ok) if reach is not None and above[i]
                          and above[i].get(r.candidate_id, math.inf) <= reach]
            s_win = err_stats([errs[k] for k in window_ids], [fr[k] for k in window_ids])
            s_dist = {"n": 0}
            if above[i]:
                try:
                    emt_ab = above_mtp_hull([_Res(r.candidate_id, r.atoms, emt_e[r.candidate_id]) for r in ok],
                                            elements)
                    s_dist = err_stats([above[i][c] - emt_ab[c] for c in above[i]])
                except Exception:
                    pass
            sigma, bound, window = info.get("sigma"), info.get("bound"), info.get("window")
            p(f"  stage {i} all:            {fmt_stats(s_all)}")
            p(f"  stage {i} near truth hull: {fmt_stats(s_near)}   (truth e_above_hull <= {1000 * NEAR_TRUTH:g})")
            p(f"  stage {i} d(above hull):   {fmt_stats(s_dist)}")
            if reach is not None:
                p(f"  stage {i} near MTP hull:  {fmt_stats(s_win)}   (within 3 bounds = {mev(reach)} of the stage's hull)")
            used = [f"sigma {mev(sigma)}" if isinstance(sigma, (int, float)) else None,
                    f"bound {mev(bound)}" if isinstance(bound, (int, float)) else None,
                    f"window {mev(window)}" if isinstance(window, (int, float)) else None]
            ratios = []
            if _finite(sigma) and s_all.get("n"):
                ratios.append(f"RMSE-lin/sigma {s_all['sigma_lin'] / sigma:.2f}")
                if s_near.get("n"):
                    ratios.append(f"RMSE-lin(near)/sigma {s_near['sigma_lin'] / sigma:.2f}")
                if s_win.get("n"):
                    ratios.append(f"RMSE-lin(near MTP hull)/sigma {s_win['sigma_lin'] / sigma:.2f}")
            lim, lim_name = (bound, "bound") if isinstance(bound, (int, float)) else (window, "window")
            if _finite(lim) and s_dist.get("n"):
                ratios.append(f"max|d(above hull)|/{lim_name} {s_dist['max'] / lim:.2f}")
            p(f"          used: {', '.join(u for u in used if u) or 'n/a'} meV   {'  '.join(ratios)}")
            out["mtp_error"].append({"stage": i, "all": s_all, "near_hull": s_near, "above_hull": s_dist, "near_mtp_hull": s_win,
                                     "sigma": sigma, "bound": bound, "window": window})

    # hindsight -------------------------------------------------------------------------------
    p("")
    p("hindsight (smallest window above the stage's MTP hull keeping every truth hull phase):")
    out["hindsight"] = []
    for i in stages:
        ab = above[i]
        if not ab:
            continue
        need, need_exact, lost = 0.0, 0.0, []
        for ph in phases:
            d = [ab[c] for c in ph["cids"] if c in ab]
            if not d:
                lost.append(ph["formula"])
                need_exact = math.inf
                continue
            need = max(need, min(d))
            cid = cid_of.get(ph["key"])
            need_exact = max(need_exact, ab.get(cid, math.inf))
        vals = np.array(list(ab.values()))
        frac = int(np.sum(vals <= need + 1e-9))
        frac_exact = int(np.sum(vals <= need_exact + 1e-9)) if math.isfinite(need_exact) else None
        used = (stage_data[i]["info"] or {}).get("bound", (stage_data[i]["info"] or {}).get("window"))
        p(f"  stage {i}: window {mev(need)} meV keeps {frac}/{len(vals)} ({pct(frac, len(vals))} of the stage, "
          f"{pct(frac, n)} of candidates)"
          + (f"; exact structures: {mev(need_exact)} meV keeps {frac_exact}" if frac_exact is not None else
             "; exact structures: some not relaxed in this stage")
          + (f"; used {mev(used)} meV" if isinstance(used, (int, float)) else "")
          + (f"; phases with no candidate in this stage: {', '.join(lost)}" if lost else ""))
        out["hindsight"].append({"stage": i, "window": need, "kept": frac, "of": len(vals),
                                 "window_exact": need_exact if math.isfinite(need_exact) else None,
                                 "kept_exact": frac_exact, "used": used, "lost": lost})
    store.close()
    return out, "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("truth")
    ap.add_argument("--json", help="also write the numbers as JSON")
    ap.add_argument("--tol", type=float, default=0.002, help="eV/atom: |dE_f| for a found phase (default 0.002)")
    ap.add_argument("--no-emt", action="store_true", help="skip the EMT single points (true MTP error)")
    args = ap.parse_args(argv)
    out, text = funnel(args.run_dir, args.truth, tol=args.tol, emt_errors=not args.no_emt)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
