"""Report figures as PNG bytes (matplotlib, Agg canvas; no pyplot global state).

Every energy is plotted in meV/atom.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # pragma: no cover
    from csp.hull import Hull
    from csp.report.data import ReportData

STAGE_COLORS = {"generated": "#9e9e9e", "stage1": "#1f77b4", "stage2": "#ff7f0e", "reference": "#2ca02c"}
_MORE_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def stage_color(stage: str) -> str:
    """Colour of a stage name ('generated', 'stage<N>', 'reference')."""
    if stage in STAGE_COLORS:
        return STAGE_COLORS[stage]
    n = int(stage[5:]) if stage.startswith("stage") and stage[5:].isdigit() else 0
    return _MORE_COLORS[n % len(_MORE_COLORS)]


def stage_label(stage: str) -> str:
    if stage == "generated":
        return "generated only"
    if stage == "reference":
        return "reference-relaxed"
    return f"stopped after stage {stage[5:]}"


def _stage_order(stage: str) -> tuple[int, int]:
    if stage == "generated":
        return (0, 0)
    if stage == "reference":
        return (2, 0)
    return (1, int(stage[5:]) if stage[5:].isdigit() else 0)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def candidate_points(data: "ReportData", hull: "Hull") -> list[tuple[dict, float, str, bool]]:
    """(composition, formation energy eV/atom, stage, has_reference_energy) of every candidate
    with an energy: the reference energy when known, else its last MTP energy."""
    points = []
    for c in data.candidates:
        e = c.best_energy()
        if e is None or c.atoms is None:
            continue
        comp = c.composition()
        if set(comp) - set(hull.elements):
            continue
        points.append((comp, hull.formation_energy(comp, e), c.stage, c.reference_energy is not None))
    return points


def _scatter_by_stage(ax, xy: list[tuple[float, float, str, bool]]) -> None:
    for stage in sorted({s for _, _, s, _ in xy}, key=_stage_order):
        color = stage_color(stage)
        for filled in (False, True):
            pts = [(x, y) for x, y, s, f in xy if s == stage and f == filled]
            if pts:
                arr = np.array(pts)
                label = stage_label(stage) if filled or stage != "reference" else None
                ax.scatter(arr[:, 0], arr[:, 1], s=18, zorder=2, label=label,
                           facecolors=color if filled else "none", edgecolors=color, linewidths=0.8)


def hull_plot(data: "ReportData", hull: "Hull") -> bytes | None:
    """Binary: formation energy vs composition; ternary: composition triangle with tie lines."""
    if len(hull.elements) == 2:
        return _binary(data, hull)
    if len(hull.elements) == 3:
        return _ternary(data, hull)
    return None


def _binary(data: "ReportData", hull: "Hull") -> bytes:
    a, b = hull.elements
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    pts = [(comp.get(b, 0.0) / sum(comp.values()), 1000 * ef, s, f) for comp, ef, s, f in candidate_points(data, hull)]
    stable = hull.stable()
    hx = [r.composition[b] for r in stable]
    hy = [1000 * r.formation_energy_per_atom for r in stable]
    ys = [y for _, y, _, _ in pts]
    floor = min(hy + ys + [0.0])
    # show the hull region and most candidates; badly relaxed outliers are counted, not drawn
    top = max(50.0, 1.5 * abs(floor), float(np.percentile(ys, 80)) if ys else 0.0)
    top = min(top, max(ys + [50.0]) + 5.0)
    hidden = sum(1 for _, y, _, _ in pts if y > top)
    _scatter_by_stage(ax, [p for p in pts if p[1] <= top])
    ax.plot(hx, hy, "k-", lw=1.3, zorder=3, label="convex hull (reference)")
    ax.plot(hx, hy, "ko", ms=5, zorder=4)
    for r, x, y in zip(stable, hx, hy):
        ax.annotate(r.formula, (x, y), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=8)
    ax.axhline(0.0, color="0.7", lw=0.6, zorder=1)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(floor - 0.12 * (top - floor) - 5, top)
    ax.set_xlabel(f"x in {a}$_{{1-x}}${b}$_x$")
    ax.set_ylabel("formation energy (meV/atom)")
    title = "Convex hull; hollow markers: MTP energy, filled: reference energy"
    if hidden:
        title += f" ({hidden} above the plotted range)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _tri(fr: Sequence[float]) -> tuple[float, float]:
    """Barycentric fractions (A, B, C) -> plane coordinates; A at (0,0), B at (1,0), C at top."""
    return fr[1] + 0.5 * fr[2], fr[2] * math.sqrt(3) / 2


def _ternary(data: "ReportData", hull: "Hull") -> bytes:
    els = hull.elements
    fig = Figure(figsize=(6.8, 6.2))
    ax = fig.add_subplot()
    corners = [_tri(f) for f in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0))]
    ax.plot(*zip(*corners), color="0.3", lw=1)
    pd = hull.phase_diagram
    drawn = set()
    for facet in pd.facets:
        for i in facet:
            for j in facet:
                if i < j and (i, j) not in drawn:
                    drawn.add((i, j))
                    p, q = pd.qhull_entries[i], pd.qhull_entries[j]
                    fp = [p.composition.get_atomic_fraction(el) for el in els]
                    fq = [q.composition.get_atomic_fraction(el) for el in els]
                    ax.plot(*zip(_tri(fp), _tri(fq)), color="k", lw=0.8, zorder=3)
    pts = []
    for comp, ef, s, f in candidate_points(data, hull):
        tot = sum(comp.values())
        x, y = _tri([comp.get(el, 0.0) / tot for el in els])
        pts.append((x, y, s, f))
    _scatter_by_stage(ax, pts)
    for r in hull.stable():
        x, y = _tri([r.composition[el] for el in els])
        ax.plot(x, y, "ko", ms=6, zorder=4)
        if max(r.composition.values()) > 1 - 1e-9:
            continue  # corners are labelled with the element
        ax.annotate(f"{r.formula}\n{1000 * r.formation_energy_per_atom:.0f}", (x, y), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7, zorder=5)
    for el, (x, y) in zip(els, corners[:3]):
        ax.annotate(el, (x, y), textcoords="offset points", xytext=(0, -14 if y == 0 else 10), ha="center",
                    fontsize=11, weight="bold")
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Hull phases (formation energy, meV/atom) and tie lines", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def funnel_plot(steps: list[tuple[str, int]]) -> bytes:
    """Horizontal bars: how many candidates survive each step."""
    fig = Figure(figsize=(7.0, 0.45 * len(steps) + 1.0))
    ax = fig.add_subplot()
    names = [s for s, _ in steps][::-1]
    counts = [n for _, n in steps][::-1]
    bars = ax.barh(names, [max(n, 0) for n in counts], color="#4c72b0")
    ax.set_xscale("symlog", linthresh=1)
    for bar, n in zip(bars, counts):
        ax.annotate(f"{n:,}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("structures (log scale)")
    ax.set_title("Screening funnel", fontsize=9)
    return _png(fig)


def parity_plot(pairs: list[tuple[float, float, str]], bands: dict[str, tuple[float, str]],
                title: str = "MTP vs reference", quantity: str = "formation energy") -> bytes | None:
    """MTP (y) vs reference (x) energies, both in meV/atom (`quantity` names the scale), one
    colour per stage; bands: stage -> (half width in eV/atom, label such as "±σ") drawn around
    the diagonal."""
    if not pairs:
        return None
    arr = np.array([(x, y) for x, y, _ in pairs])
    lo, hi = float(arr.min()), float(arr.max())
    pad = 0.05 * (hi - lo) + 10.0
    line = np.array([lo - pad, hi + pad])
    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.add_subplot()
    for stage in sorted(set(bands) | {s for _, _, s in pairs}, key=_stage_order):
        sel = np.array([(x, y) for x, y, s in pairs if s == stage])
        if len(sel):
            ax.scatter(sel[:, 0], sel[:, 1], s=16, color=stage_color(stage), label=f"MTP {stage}", zorder=3)
        if stage in bands and bands[stage][0]:
            half, name = 1000 * bands[stage][0], bands[stage][1]
            ax.fill_between(line, line - half, line + half, color=stage_color(stage), alpha=0.15,
                            label=f"{name} {stage} ({half:.1f} meV/atom)")
    ax.plot(line, line, "k--", lw=0.8)
    ax.set_xlim(*line)
    ax.set_ylim(*line)
    rmse = float(np.sqrt(np.mean((arr[:, 1] - arr[:, 0]) ** 2)))
    ax.set_xlabel(f"reference {quantity} (meV/atom)")
    ax.set_ylabel(f"MTP {quantity} (meV/atom)")
    ax.set_title(f"{title}\n{len(arr)} structures, RMSE {rmse:.1f} meV/atom", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def learning_plot(rounds: list) -> bytes | None:
    """Training-set size and RMSE / σ (meV/atom) per active-learning round."""
    if not rounds:
        return None
    fig = Figure(figsize=(9.0, 3.6))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, stage in enumerate(dict.fromkeys(r.stage for r in rounds)):
        sel = [(k, r) for k, r in enumerate(rounds) if r.stage == stage]
        color = stage_color(stage)
        ax1.plot([k for k, _ in sel], [r.training_size for _, r in sel], "o-", color=color, label=stage)
        for attr, style, name in (("rmse_energy", "o-", "training RMSE"), ("sigma", "s--", "σ (cross-validated)")):
            pts = [(k, 1000 * getattr(r, attr)) for k, r in sel if getattr(r, attr) is not None]
            if pts:
                ax2.plot(*zip(*pts), style, color=color, label=f"{stage} {name}")
    ax1.set_xlabel("active-learning round (stages in sequence)")
    ax1.set_ylabel("training-set size")
    ax2.set_xlabel("active-learning round (stages in sequence)")
    ax2.set_ylabel("energy error (meV/atom)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title("Training set", fontsize=9)
    ax2.set_title("Potential accuracy", fontsize=9)
    return _png(fig)


def evolution_plot(generations: list[dict]) -> bytes | None:
    """Best fitness (meV/atom above the evolution's MTP hull) of each generation's new structures,
    with the number of new structures per generation."""
    pts = [(g["generation"], 1000 * g["best_fitness"]) for g in generations
           if g["best_fitness"] is not None and math.isfinite(g["best_fitness"])]
    if not pts:
        return None
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    ax2.bar([g["generation"] for g in generations], [g["new"] for g in generations], color="#dddddd", zorder=0)
    ax2.set_ylabel("new structures", color="#777777")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(*zip(*pts), "o-", color="#d62728")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("best fitness (meV/atom above hull)")
    ax.set_title("Evolutionary search: best new structure per generation", fontsize=9)
    return _png(fig)
