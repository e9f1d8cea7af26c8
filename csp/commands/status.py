"""`csp status RUN_DIR`: state (running / stopped / finished), current step with an ETA where
one is knowable, counts, potentials and the hull phases of a campaign."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from csp.errors import InputError

NAME = "status"
HELP = "summarise a campaign: running / stopped / finished, current step and ETA, hull phases"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory of a campaign")


@dataclass
class State:
    """state: running | stopped | finished | unknown; detail: who holds the lock, since when."""

    state: str
    detail: str = ""


def campaign_state(run_dir, finished: bool) -> State:
    """Finished when the store has the hull step; otherwise the run directory's lock says whether
    a `csp run` is alive (csp.campaign.lock; 'unknown' where that module is not available)."""
    if finished:
        return State("finished")
    try:
        from csp.campaign.lock import lock_holder
    except ImportError:
        return State("unknown", "cannot tell whether a csp run is working on it (no lock support)")
    info = lock_holder(Path(run_dir))
    if info is None:
        return State("stopped", "no csp run holds the run directory; `csp run` resumes it")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started)) if info.started else "?"
    who = f"pid {info.pid} on {info.host}, since {since}"
    if info.alive is False:
        return State("stopped", f"the csp run that held it ({who}) is gone; `csp run` resumes it")
    if info.alive is None:
        return State("running", f"{who} (on another host: not checked)")
    return State("running", who)


def _eta(done: int, total: int, since: float | None, now: float) -> str:
    """'done of total' with an ETA from the rate since `since` (epoch) when it means something."""
    from csp.campaign.progress import duration

    text = f"{done:,} of {total:,}"
    if since is not None and 0 < done < total and now > since:
        rate = done / (now - since)
        text += f", ETA {duration((total - done) / rate)} (at the rate so far)"
    return text


def _planned_steps(store) -> list[str]:
    search = store.get_meta("search") or {}
    screening = (search.get("screening") or {}) if isinstance(search, dict) else {}
    n_stages = len(screening.get("stages") or []) or 2
    steps = ["generate", "initial_training"]
    if isinstance(search, dict) and (search.get("candidates") or {}).get("evolution"):
        steps.append("evolution")
    steps += [f"stage{i}/screened" for i in range(1, n_stages + 1)]
    return steps + ["reference_relaxed", "hull"]


def current_step(store, now: float | None = None) -> tuple[str, str]:
    """(the first step not done, its progress with an ETA where knowable), or ("", "") when done."""
    now = time.time() if now is None else now
    done_at = dict(store.steps())
    planned = _planned_steps(store)
    for k, step in enumerate(planned):
        if step in done_at:
            continue
        since = max((done_at[s] for s in planned[:k] if s in done_at), default=None)
        search = store.get_meta("search") or {}
        if step == "initial_training":
            al = ((search.get("screening") or {}).get("active_learning") or {}) if isinstance(search, dict) else {}
            total = int(al.get("initial_training", 20))
            n = sum(1 for r in store.reference_calls("single_point") if r.key.startswith("sp:initial"))
            return step, "reference single points " + _eta(min(n, total), total, since, now)
        if step == "evolution":
            evo = (search.get("candidates") or {}).get("evolution") if isinstance(search, dict) else None
            total = int(evo.get("generations", 20)) if isinstance(evo, dict) else 20
            done = len(store.generations())
            return step, "generations " + _eta(min(done, total), total, since, now) + " (or fewer: it stops when stalled)"
        if step.startswith("stage") and step.endswith("/screened"):
            index = int(step[5:-len("/screened")])
            start = store.n_candidates() if index == 1 else len(store.kept_ids(index - 1))
            relaxed = len(store.stage_pass_done_ids(index, 0))
            pots = store.potentials(index)
            text = f"first relaxation pass {_eta(relaxed, start, since, now)} structures"
            if relaxed >= start:
                text = f"first pass done ({start:,} structures); active learning: {len(pots)} potentials so far"
            return f"stage {index}", text
        if step == "reference_relaxed":
            last = max((int(s[5:-len("/screened")]) for s in done_at if s.startswith("stage")
                        and s.endswith("/screened")), default=0)
            survivors = set(store.kept_ids(last)) if last else set()
            n = len({r.candidate_id for r in store.reference_calls("relax")} & survivors)
            return "reference relaxations", _eta(n, len(survivors), since, now) + " survivors"
        return step, ""
    return "", ""


def _hull_phases(store) -> list[str]:
    from csp.hull import final_hull
    from csp.report.render import space_group

    elements = store.get_meta("elements") or []
    try:
        hull = final_hull(store, elements)
    except InputError:
        return []
    return [f"{r.formula} {space_group(hull.entry(r.id).atoms)[0]} (id {r.id}, "
            f"{1000 * r.formation_energy_per_atom:.1f} meV/atom)" for r in hull.stable()]


def summary(run_dir: str) -> str:
    """Text summary of the campaign in `run_dir`."""
    from csp.campaign.store import CampaignStore

    with CampaignStore(run_dir) as store:
        finished = store.step_done("hull")
        state = campaign_state(run_dir, finished)
        lines = [f"run directory: {run_dir}"]
        name, elements = store.get_meta("name"), store.get_meta("elements")
        if name or elements:
            lines.append(f"campaign: {name or '-'}" + (f" ({'-'.join(elements)})" if elements else ""))
        lines.append(f"state: {state.state}" + (f" — {state.detail}" if state.detail else ""))
        if not finished:
            step, progress = current_step(store)
            if step:
                lines.append(f"current step: {step}" + (f": {progress}" if progress else ""))
        steps = store.steps()
        if steps:
            last, when = steps[-1]
            lines.append(f"last finished step: {last} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))})")
        counts = store.counts()
        width = max(len(k) for k in counts)
        lines += [f"  {k:<{width}}  {v:,}" for k, v in counts.items()]
        for p in store.potentials():
            pname = f"stage {p['stage']}" if p["stage"] else "evolution"   # stage 0: the evolutionary search's
            rmse = p["extra"].get("rmse_energy")
            fit = "" if rmse is None else f", training RMSE {1000 * rmse:.2f} meV/atom"
            lines.append(f"potential {pname} round {p['round']}: level {p['level']}, "
                         f"{p['n_train']} training configurations{fit}")
        for k in range(1, 100):
            screened = store.step_info(f"stage{k}/screened")
            if screened is None:
                break
            em = screened.get("error_model") or {}
            if "bound" in screened:
                value = em.get("sigma", screened.get("sigma"))
                sigma = "n/a" if not em.get("n") or value is None else \
                    f"{1000 * value:.2f} meV/atom on {em['n']} audit points"
                lines.append(f"stage {k}: kept {screened['kept']} of {screened.get('start', '?')}, audited σ = {sigma},"
                             f" bound {1000 * screened['bound']:.2f} meV/atom")
        phases = _hull_phases(store)
        if phases:
            lines.append("hull phases" + ("" if finished else " so far") + ":")
            lines += [f"  {p}" for p in phases]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not Path(args.run_dir).is_dir():
        raise InputError(f"'{args.run_dir}' is not a directory")
    print(summary(args.run_dir))
    return 0
