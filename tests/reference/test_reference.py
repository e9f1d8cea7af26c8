"""Reference backends: configuration, single points, relaxations, failures as data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from scipy.optimize import minimize_scalar

from csp.errors import InputError
from csp.reference import Outcome, get_reference, validate_section

HERE = Path(__file__).parent


@pytest.fixture
def flaky_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    yield


def _cu2(a=3.7, rattle=0.05):
    atoms = bulk("Cu", "fcc", a=a) * (1, 1, 2)
    atoms.rattle(rattle, seed=1)
    return atoms


def test_emt_single_point_equals_ase_emt_and_keeps_provenance(tmp_path):
    atoms = _cu2()
    atoms.symbols[1] = "Au"
    out = get_reference({"calculator": "emt"}).single_point(atoms, tmp_path / "sp")
    direct = atoms.copy()
    direct.calc = EMT()
    assert isinstance(out, Outcome) and out.ok and out.reason == ""
    assert out.energy == pytest.approx(direct.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(out.forces, direct.get_forces(), atol=1e-12)
    np.testing.assert_allclose(out.stress, direct.get_stress(), atol=1e-12)
    assert out.seconds > 0 and out.attempts == 1
    files = {p.name for p in (tmp_path / "sp").iterdir()}
    assert {"input.extxyz", "output.extxyz", "outcome.json", "reference.log", "attempt-1"} <= files
    back = ase.io.read(tmp_path / "sp" / "output.extxyz")
    assert back.get_potential_energy() == pytest.approx(out.energy, abs=1e-6)
    doc = json.loads((tmp_path / "sp" / "outcome.json").read_text())
    assert doc["ok"] and doc["operation"] == "single_point" and doc["settings"]["calculator"] == "emt"


def test_emt_relaxation_reaches_the_emt_lattice_constant(tmp_path):
    ref = get_reference({"calculator": "emt", "relax": {"fmax": 0.001, "stress_tol": 0.01, "max_steps": 200}})
    out = ref.relax(_cu2(a=3.75), tmp_path / "relax")
    assert out.ok and out.converged and out.steps > 0
    assert np.sqrt((out.forces**2).sum(1)).max() <= 0.001
    assert np.abs(out.stress).max() <= 0.01 * units.GPa

    def energy(a):
        x = bulk("Cu", "fcc", a=a)
        x.calc = EMT()
        return x.get_potential_energy()

    a0 = minimize_scalar(energy, bracket=(3.5, 3.6, 3.7), tol=1e-10).x
    assert out.atoms.get_volume() / 2 == pytest.approx(a0**3 / 4, rel=1e-4)
    assert out.energy / 2 == pytest.approx(energy(a0), abs=1e-5)
    assert len(ase.io.read(tmp_path / "relax" / "attempt-1" / "trajectory.extxyz", ":")) == out.steps + 1


def test_relaxation_under_pressure_balances_the_stress(tmp_path):
    p = 20.0  # GPa
    ref0 = get_reference({"calculator": "emt", "relax": {"fmax": 0.002, "stress_tol": 0.02}})
    refp = get_reference({"calculator": "emt", "relax": {"fmax": 0.002, "stress_tol": 0.02, "pressure": p}})
    out0, outp = ref0.relax(_cu2(), tmp_path / "p0"), refp.relax(_cu2(), tmp_path / "p20")
    assert out0.ok and outp.ok and outp.converged
    np.testing.assert_allclose(outp.stress[:3], -p * units.GPa, atol=0.02 * units.GPa)
    assert outp.atoms.get_volume() < 0.95 * out0.atoms.get_volume()
    assert outp.enthalpy == pytest.approx(outp.energy + p * units.GPa * outp.atoms.get_volume(), rel=1e-9)
    assert out0.enthalpy == out0.energy


def test_child_process_isolation_gives_the_same_answer(tmp_path):
    inline = get_reference({"calculator": "emt"}).relax(_cu2(), tmp_path / "inline")
    child = get_reference({"calculator": "emt", "isolation": "process", "timeout": 120}).relax(_cu2(), tmp_path / "child")
    assert child.ok and child.steps == inline.steps
    assert child.energy == pytest.approx(inline.energy, abs=1e-6)
    assert (tmp_path / "child" / "attempt-1" / "request.json").exists()


def test_any_ase_calculator_by_import_path(tmp_path):
    from ase.calculators.lj import LennardJones

    section = {"calculator": "ase.calculators.lj.LennardJones", "parameters": {"sigma": 2.3, "epsilon": 0.1, "rc": 6.0}}
    ref = get_reference(section)
    calc = ref.calculator(_cu2(), tmp_path)
    assert isinstance(calc, LennardJones) and calc.parameters["sigma"] == 2.3
    out = ref.single_point(_cu2(), tmp_path / "lj")
    direct = _cu2()
    direct.calc = LennardJones(sigma=2.3, epsilon=0.1, rc=6.0)
    assert out.energy == pytest.approx(direct.get_potential_energy(), abs=1e-12)


def test_failures_are_recorded_and_the_batch_completes(tmp_path, flaky_path):
    """30% of calls fail (seeded); one fallback retries with an independent draw."""
    from flaky_calculators import draw

    section = {"calculator": "flaky_calculators.FlakyEMT", "parameters": {"fail_rate": 0.3, "seed": 7},
               "fallbacks": [{"parameters": {"salt": 1}}]}
    ref = get_reference(section)
    rng = np.random.default_rng(3)
    structures = []
    for _ in range(40):
        a = bulk("Cu", "fcc", a=3.6) * (1, 1, 2)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        structures.append(a)
    outcomes = [ref.single_point(a, tmp_path / f"call{i}") for i, a in enumerate(structures)]
    first = [draw(a.positions, 7, 0) for a in structures]
    second = [draw(a.positions, 7, 1) for a in structures]
    expect_fail = [u0 < 0.3 and u1 < 0.3 for (u0, _), (u1, _) in zip(first, second)]
    expect_retry = [u0 < 0.3 for u0, _ in first]
    assert 6 <= sum(expect_retry) <= 18 and sum(expect_fail) >= 1  # the seeded draw exercises both paths
    assert [not o.ok for o in outcomes] == expect_fail
    assert [o.attempts for o in outcomes] == [2 if r else 1 for r in expect_retry]
    words = {"scf": "scf: SCFError", "nan": "nan: non-finite", "error": "error: RuntimeError"}
    for o, (u1, kind1), (u0, kind0), a in zip(outcomes, second, first, structures):
        if not o.ok:
            assert o.reason.startswith(words[kind1]) and o.kind == kind1 and o.energy is None
            assert o.attempt_reasons[0].startswith(words[kind0])
            doc = json.loads(Path(o.workdir, "outcome.json").read_text())
            assert not doc["ok"] and len(doc["attempt_log"]) == 2
            assert (Path(o.workdir) / "attempt-2" / "error.txt").exists()
        else:
            ref_atoms = a.copy()
            ref_atoms.calc = EMT()
            assert o.energy == pytest.approx(ref_atoms.get_potential_energy(), abs=1e-12)


def test_inline_time_limit(tmp_path, flaky_path):
    ref = get_reference({"calculator": "flaky_calculators.SlowEMT", "parameters": {"delay": 30}, "timeout": 0.5})
    t0 = time.time()
    out = ref.single_point(_cu2(), tmp_path / "slow")
    assert time.time() - t0 < 10
    assert not out.ok and out.kind == "timeout" and "0.5 s" in out.reason


def test_child_process_time_limit_kills_the_worker(tmp_path, flaky_path):
    ref = get_reference({"calculator": "flaky_calculators.SlowEMT", "parameters": {"delay": 60},
                         "timeout": 4, "isolation": "process", "fallbacks": [{"parameters": {"delay": 0.0}}]})
    t0 = time.time()
    out = ref.single_point(_cu2(), tmp_path / "slow")
    assert time.time() - t0 < 40
    assert out.ok and out.attempts == 2 and out.attempt_reasons[0].startswith("timeout: ")
    direct = _cu2()
    direct.calc = EMT()
    assert out.energy == pytest.approx(direct.get_potential_energy(), abs=1e-6)


def test_child_that_dies_is_recorded(tmp_path, flaky_path):
    ref = get_reference({"calculator": "flaky_calculators.DyingEMT", "isolation": "process"})
    out = ref.single_point(_cu2(), tmp_path / "dies")
    assert not out.ok and out.kind == "crash"
    assert out.reason.startswith("crash: worker process exited with code -9") and "stderr.txt" in out.reason


def test_child_crash_is_recorded(tmp_path):
    ref = get_reference({"calculator": "emt", "isolation": "process"})
    atoms = _cu2()
    atoms.symbols[0] = "Fe"  # EMT has no Fe parameters: the worker raises
    out = ref.single_point(atoms, tmp_path / "fe")
    assert not out.ok and out.kind == "error" and "NotImplementedError" in out.reason


@pytest.mark.parametrize("section, key", [
    ({"calculator": "emtt"}, "reference.calculator"),
    ({"calculator": 3}, "reference.calculator"),
    ({"calculator": "emt", "ecut": 400}, "reference.ecut"),
    ({"calculator": "emt", "relax": {"fmaxx": 0.1}}, "reference.relax.fmaxx"),
    ({"calculator": "emt", "relax": {"fmax": -1}}, "reference.relax.fmax"),
    ({"calculator": "emt", "relax": {"optimizer": "SD"}}, "reference.relax.optimizer"),
    ({"calculator": "emt", "timeout": "long"}, "reference.timeout"),
    ({"calculator": "emt", "isolation": "thread"}, "reference.isolation"),
    ({"calculator": "emt", "fallbacks": {"maxiter": 3}}, "reference.fallbacks"),
    ({"calculator": "gpaw", "ecut": "high"}, "reference.ecut"),
    ({"calculator": "gpaw", "smearing_type": "gauss"}, "reference.smearing_type"),
    ({"calculator": "gpaw", "fallbacks": [{"maxiter": 0}]}, "reference.fallbacks[0].maxiter"),
    ({"calculator": "gpaw", "kpoints": 4}, "reference.kpoints"),
    ({"calculator": "vasp", "encut": 500}, "reference.encut"),
    ({"calculator": "espresso", "pseudo_dir": "/p"}, "reference.pseudopotentials"),
    ({"calculator": "no.such.module.Calc"}, "reference.calculator"),
    ({"calculator": "ase.build.bulk"}, "reference.calculator"),
    ({"calculator": "ase.calculators.lj.LennardJones", "parameters": [1]}, "reference.parameters"),
])
def test_bad_sections_name_the_key(section, key):
    with pytest.raises(InputError) as err:
        validate_section(section)
    message = str(err.value)
    assert f"'{key}'" in message and "\n" not in message


def test_gpaw_settings_map_to_gpaw_keywords(tmp_path):
    from csp.reference import gpaw as backend

    ref = get_reference({"calculator": "gpaw", "ecut": 400, "kpoint_density": 3.0, "smearing": 0.05,
                         "xc": "PBEsol", "relax": {"fmax": 0.02}})
    assert ref.isolation == "process" and ref.timeout == 4 * 3600.0
    assert ref.parameters["ecut"] == 400.0 and ref.fallbacks == ({"maxiter": 1000, "mixer_beta": 0.02},)
    atoms = bulk("Al", "fcc", a=4.05)
    kw = backend.calculator_kwargs(ref.attempt_parameters()[1], atoms, tmp_path)
    assert kw["xc"] == "PBEsol" and kw["occupations"] == {"name": "fermi-dirac", "width": 0.05}
    assert kw["maxiter"] == 1000 and kw["mixer"] == {"beta": 0.02}
    # mesh n_i = ceil(2π |b_i| · density), b_i the reciprocal vectors without the 2π
    recip = np.linalg.norm(atoms.cell.reciprocal(), axis=1)
    assert kw["kpts"]["size"] == tuple(int(np.ceil(2 * np.pi * r * 3.0)) for r in recip)
    assert kw["kpts"]["gamma"] is True and kw["mode"] == {"name": "pw", "ecut": 400.0}
    assert kw["spinpol"] is False and "magmoms" not in kw
    spin = get_reference({"calculator": "gpaw", "spinpol": True, "magmom": 2.5}).parameters
    fe = bulk("Fe", "bcc", a=2.83, cubic=True)
    fe.set_initial_magnetic_moments(None)
    assert backend.calculator_kwargs(spin, fe, tmp_path)["magmoms"] == [2.5, 2.5]
    fe.set_initial_magnetic_moments([2.0, -2.0])  # the structure's own moments win
    assert backend.calculator_kwargs(spin, fe, tmp_path)["magmoms"] == [2.0, -2.0]


def test_vasp_configuration(tmp_path):
    from ase.calculators.vasp import Vasp

    ref = get_reference({"calculator": "vasp", "command": "mpirun -n 4 vasp_std", "kpoint_density": 4.0,
                         "parameters": {"encut": 600, "ispin": 2}})
    atoms = bulk("Cu", "fcc", a=3.6)
    calc = ref.calculator(atoms, tmp_path)
    assert isinstance(calc, Vasp) and calc.command == "mpirun -n 4 vasp_std"
    assert calc.int_params["ispin"] == 2 and calc.float_params["encut"] == 600
    assert calc.exp_params["ediff"] == 1e-6 and calc.input_params["gamma"] is True
    mesh = tuple(int(np.ceil(2 * np.pi * r * 4.0)) for r in np.linalg.norm(atoms.cell.reciprocal(), axis=1))
    assert tuple(calc.input_params["kpts"]) == mesh and calc.directory == str(tmp_path)
    assert calc.string_params["prec"] == "Accurate" and calc.int_params["ismear"] == 1
    fb = ref.attempt_parameters()[1]["parameters"]
    assert fb["nelm"] == 300 and fb["encut"] == 600


def test_espresso_configuration_writes_pw_input(tmp_path):
    from ase.calculators.espresso import Espresso

    ref = get_reference({"calculator": "espresso", "pseudo_dir": "/opt/pseudo", "kpoint_density": 2.0,
                         "pseudopotentials": {"Cu": "Cu.pbe.UPF"}, "parameters": {"ecutwfc": 45}})
    atoms = bulk("Cu", "fcc", a=3.6)
    calc = ref.calculator(atoms, tmp_path)
    assert isinstance(calc, Espresso)
    calc.write_inputfiles(atoms, ["energy", "forces", "stress"])
    text = (tmp_path / "espresso.pwi").read_text().lower()
    assert "ecutwfc          = 45" in text and "cu.pbe.upf" in text and "tstress          = .true." in text
    mesh = tuple(int(np.ceil(2 * np.pi * r * 2.0)) for r in np.linalg.norm(atoms.cell.reciprocal(), axis=1))
    assert "k_points automatic\n{} {} {}  0 0 0".format(*mesh) in text


def test_check_elements(tmp_path):
    get_reference("emt").check_elements(["Cu", "Au", "Pd"])
    with pytest.raises(InputError, match="element Fe is not supported by the emt reference"):
        get_reference("emt").check_elements(["Cu", "Fe"])
    (tmp_path / "Cu.UPF").write_text("pseudo")
    espresso = get_reference({"calculator": "espresso", "pseudo_dir": str(tmp_path),
                              "pseudopotentials": {"Cu": "Cu.UPF", "Pd": "Pd.UPF"}})
    espresso.check_elements(["Cu"])
    with pytest.raises(InputError, match="'reference.pseudopotentials': no pseudopotential for Au"):
        espresso.check_elements(["Au", "Cu"])
    with pytest.raises(InputError, match="'reference.pseudopotentials': file not found in pseudo_dir .*Pd: Pd.UPF"):
        espresso.check_elements(["Cu", "Pd"])
    missing_dir = get_reference({"calculator": "espresso", "pseudo_dir": str(tmp_path / "nowhere"),
                                 "pseudopotentials": {"Cu": "Cu.UPF"}})
    with pytest.raises(InputError, match="'reference.pseudo_dir': directory .* not found"):
        missing_dir.check_elements(["Cu"])
    get_reference("gpaw").check_elements(["Fe"])  # GPAW has PAW setups for the periodic table


def test_candidate_provenance_in_info_is_harmless(tmp_path):
    atoms = _cu2()
    atoms.info.update({"source": "prototype", "assignment": {"A": "Cu"}, "hnf": np.eye(3, dtype=int),
                       "object": object()})
    for iso in ("inline", "process"):
        out = get_reference({"calculator": "emt", "isolation": iso}).single_point(atoms, tmp_path / iso)
        assert out.ok, out.reason


def test_repeated_call_in_the_same_directory_starts_clean(tmp_path, flaky_path):
    ref = get_reference({"calculator": "emt", "isolation": "process"})
    first = ref.relax(_cu2(), tmp_path / "call")
    again = ref.relax(_cu2(), tmp_path / "call")
    frames = ase.io.read(tmp_path / "call" / "attempt-1" / "trajectory.extxyz", ":")
    assert again.ok and again.steps == first.steps and len(frames) == again.steps + 1
    dying = get_reference({"calculator": "flaky_calculators.DyingEMT", "isolation": "process"})
    out = dying.relax(_cu2(), tmp_path / "call")  # no stale result.json may be taken for its result
    assert not out.ok and out.kind == "crash" and not (tmp_path / "call" / "output.extxyz").exists()
    assert (tmp_path / "call" / "reference.log").read_text().count("relax attempt 1") == 3
