"""`export_run(store, out_dir)`: a campaign's results as files other codes read.

    potentials/stage<N>.mtp        each stage's final potential (MLIP .mtp text, as stored)
    potentials/stage<N>.mtp.als    its active set over the configurations it was trained on
                                   (`csp mtp calc-grade` / `csp.mtp.grade.ActiveSet.load`)
    training/training.cfg          the whole training set (MLIP .cfg: energy, forces, PlusStress)
    training/training.extxyz       the same with ASE's energy / forces / stress (eV/Å³)
    reference_relaxed.extxyz       every reference-relaxed structure: energy, forces, stress and
                                   info e_above_hull, formation_energy (eV/atom), candidate_id, source
    stable/<name>.cif, .vasp       hull phases: symmetrised CIF and the relaxed cell as POSCAR
    structures.db                  ASE database (`ase db structures.db`) of the reference-relaxed
                                   structures with key-value pairs (see KEYS)

Energies eV (totals) and eV/atom (key-value pairs, info); stress eV/Å³ (ASE sign).
"""

from __future__ import annotations

import os
from pathlib import Path

from csp.atomic import atomic_write, fsync_dir
from csp.errors import InputError

# key-value pairs of every row of structures.db (ASE reserves `formula`: it is the row's own column)
KEYS = ("candidate_id", "reduced_formula", "source", "space_group", "space_group_number", "e_above_hull",
        "formation_energy", "energy_per_atom", "stable")


def reduced_formula(atoms) -> str:
    """Reduced formula independent of the atom order ('Cu3Au'), as pymatgen writes it."""
    from pymatgen.core import Composition

    return Composition(atoms.get_chemical_formula()).reduced_formula


def _species(store, mtp=None) -> list[str]:
    elements = list(store.get_meta("elements") or [])
    if mtp is not None and mtp.elements:
        return list(mtp.elements)
    return elements


def _write_potentials(store, out: Path, training_atoms: list) -> list[Path]:
    from csp.mtp.grade import DEFAULT_MODE, ActiveSet, active_set_path
    from csp.mtp.io import read_mtp

    pot_dir = out / "potentials"
    pot_dir.mkdir(parents=True, exist_ok=True)
    for old in list(pot_dir.glob("*.mtp")) + list(pot_dir.glob("*.mtp.als")):
        old.unlink()
    paths = []
    stages = sorted({p["stage"] for p in store.potentials()})
    for stage in stages:
        pot = store.latest_potential(stage)
        name = f"stage{stage}" if stage > 0 else "evolution"
        path = pot_dir / f"{name}.mtp"
        with atomic_write(path) as fh:
            fh.write(pot["mtp"])
        mtp = read_mtp(path)
        train = training_atoms[: int(pot["n_train"])]
        if train:
            aset = ActiveSet.build(mtp, train, mode=DEFAULT_MODE, species=_species(store, mtp))   # the campaign's mode
            als = active_set_path(path)
            tmp = als.with_name(f".{als.name}.tmp")
            aset.save(tmp)
            os.replace(tmp, als)
            paths.append(als)
        paths.append(path)
    return paths


def _write_training(store, out: Path, training_atoms: list) -> list[Path]:
    import ase.io

    from csp.mtp.io import atoms_to_cfg, write_cfg

    tdir = out / "training"
    tdir.mkdir(parents=True, exist_ok=True)
    species = _species(store)
    cfg, xyz = tdir / "training.cfg", tdir / "training.extxyz"
    write_cfg(cfg, [atoms_to_cfg(a, species) for a in training_atoms])   # atomic
    with atomic_write(xyz) as fh:
        ase.io.write(fh, training_atoms, format="extxyz")
    return [cfg, xyz]


def export_run(store, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the files listed in the module docstring under `out_dir` from a
    `csp.campaign.store.CampaignStore`; return {name: path}. Missing parts of a campaign that has
    not got that far (no potential, no reference relaxation yet) are simply not written."""
    import ase.db
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from csp.hull import final_hull, reference_entries
    from csp.report.render import space_group, structure_name, write_cif

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    training = store.training_set()
    training_atoms = [rec.to_atoms() for rec in training]
    for a, rec in zip(training_atoms, training):
        a.info["candidate_id"] = -1 if rec.candidate_id is None else int(rec.candidate_id)
    for p in _write_potentials(store, out, training_atoms):
        paths[p.relative_to(out).as_posix()] = p
    if training_atoms:
        for p in _write_training(store, out, training_atoms):
            paths[p.relative_to(out).as_posix()] = p

    elements = list(store.get_meta("elements") or [])
    entries = reference_entries(store)
    try:
        hull = final_hull(store, elements) if entries else None
    except InputError:
        hull = None
    rows = {r.id: r for r in hull.rows} if hull is not None else {}
    sources = {str(cid): str(a.info.get("source", "")) for cid, a in store.candidates()}
    calls = {str(r.candidate_id): r for r in store.reference_calls("relax") if r.ok}
    calculator = str((store.get_meta("reference") or {}).get("calculator") or "reference")
    frames = []
    for e in entries:
        rec = calls.get(e.id)
        atoms = rec.to_atoms() if rec is not None else e.atoms.copy()
        if rec is None:
            atoms.calc = SinglePointCalculator(atoms, energy=e.energy)
        atoms.info.pop("reference_call", None)
        atoms.calc.name = calculator   # `ase db`'s calculator column
        row = rows.get(e.id)
        symbol, number = space_group(atoms)
        atoms.info.update(candidate_id=int(e.id) if e.id.isdigit() else e.id, source=sources.get(e.id, ""),
                          energy_per_atom=e.energy_per_atom, space_group=symbol, space_group_number=number)
        if row is not None:
            atoms.info.update(e_above_hull=row.e_above_hull, formation_energy=row.formation_energy_per_atom,
                              stable=bool(row.stable))
        frames.append((e, row, atoms))

    stable_dir = out / "stable"
    stable_dir.mkdir(exist_ok=True)
    for old in list(stable_dir.glob("*.vasp")) + list(stable_dir.glob("*.cif")):
        old.unlink()
    if frames:
        xyz = out / "reference_relaxed.extxyz"
        with atomic_write(xyz) as fh:
            ase.io.write(fh, [a for _, _, a in frames], format="extxyz")
        paths["reference_relaxed.extxyz"] = xyz
        db_path = out / "structures.db"
        tmp = out / ".structures.db.tmp"
        if tmp.exists():
            tmp.unlink()
        with ase.db.connect(str(tmp), type="db", append=False) as db:
            for e, row, atoms in frames:
                kvp = {"candidate_id": int(e.id) if e.id.isdigit() else e.id, "reduced_formula": reduced_formula(atoms),
                       "source": atoms.info["source"], "space_group": atoms.info["space_group"],
                       "space_group_number": int(atoms.info["space_group_number"]),
                       "energy_per_atom": float(e.energy_per_atom)}
                if row is not None:
                    kvp.update(e_above_hull=float(row.e_above_hull),
                               formation_energy=float(row.formation_energy_per_atom), stable=bool(row.stable))
                db.write(atoms, key_value_pairs=kvp)
        os.replace(tmp, db_path)
        fsync_dir(out)
        paths["structures.db"] = db_path
    if hull is not None:
        import ase.io.vasp  # noqa: F401 - the POSCAR writer

        for row in hull.stable():
            atoms = hull.entry(row.id).atoms
            tmp = stable_dir / f".{row.id}.cif.tmp"
            symbol, _ = write_cif(atoms, tmp)   # atomic
            stem = structure_name(row.formula, symbol, row.id)
            tmp.replace(stable_dir / f"{stem}.cif")
            with atomic_write(stable_dir / f"{stem}.vasp") as fh:
                ase.io.write(fh, atoms, format="vasp", direct=True, sort=True)
            paths[f"stable/{stem}.cif"] = stable_dir / f"{stem}.cif"
            paths[f"stable/{stem}.vasp"] = stable_dir / f"{stem}.vasp"
    return paths
