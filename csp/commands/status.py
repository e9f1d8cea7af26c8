"""`csp status RUN_DIR`: summary of a campaign, live or finished."""

from __future__ import annotations

import argparse
import time

NAME = "status"
HELP = "summarise a campaign's progress (live or finished)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory of a campaign")


def summary(run_dir: str) -> str:
    """Text summary of the store of `run_dir`."""
    from csp.campaign.store import CampaignStore

    with CampaignStore(run_dir) as store:
        lines = [f"run directory: {run_dir}"]
        elements = store.get_meta("elements")
        if elements:
            lines.append(f"elements: {'-'.join(elements)}")
        counts = store.counts()
        width = max(len(k) for k in counts)
        lines += [f"  {k:<{width}}  {v}" for k, v in counts.items()]
        pots = store.potentials()
        for p in pots:
            sigma = "n/a" if p["sigma"] is None else f"{1000 * p['sigma']:.2f} meV/atom"
            name = f"stage {p['stage']}" if p["stage"] else "evolution"   # stage 0: the evolutionary search's
            lines.append(f"potential {name} round {p['round']}: level {p['level']}, "
                         f"{p['n_train']} training configurations, σ = {sigma}")
        steps = store.steps()
        if steps:
            name, when = steps[-1]
            lines.append(f"last step: {name} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))})")
        lines.append("state: finished" if store.step_done("hull") else "state: in progress (or stopped)")
        hull = store.get_meta("hull")
        if hull:
            lines.append("hull phases: " + ", ".join(f"{r['formula']} ({1000 * r['formation_energy_per_atom']:.1f} "
                                                     "meV/atom)" for r in hull))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(summary(args.run_dir))
    return 0
