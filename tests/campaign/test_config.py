"""The search file: defaults, and one-line errors (exit 2, nothing written) for bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ase.units import GPa

from csp.cli import main
from csp.config import load_search
from csp.errors import InputError

MINIMAL = "elements: [Cu, Pd]\n"

FULL = """
name: cu-pd
elements: [Cu, Pd]
seed: 7
candidates:
  enumerate: {lattices: [fcc, bcc], max_atoms: 6}
  prototypes: [L1_2, B2]
  random: {count: 10, max_atoms: 8}
reference:
  calculator: emt
  relax: {fmax: 0.02, max_steps: 100}
screening:
  stages:
    - {level: 8, window: 3.0}
    - {level: 12}
  active_learning: {select_threshold: 2.5, break_threshold: 8.0, max_rounds: 4}
  relax: {fmax: 0.005, stress_tol: 0.2, max_steps: 300, batch_size: 16}
  training: {max_iter: 200, cv_folds: 3}
"""


def write(tmp_path: Path, text: str, name: str = "search.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_file_gets_defaults(tmp_path):
    s = load_search(write(tmp_path, MINIMAL, "mini.yaml"))
    assert s.name == "mini" and s.elements == ("Cu", "Pd") and s.seed == 0
    assert s.run_dir == Path("runs") / "mini"
    assert s.candidates.enumerate.lattices == ("fcc", "bcc", "hcp")
    assert s.candidates.prototypes == ("all",)
    assert s.reference.name == "emt"
    assert [st.level for st in s.screening.stages] == [10, 16]
    assert s.screening.active_learning.select_threshold == 2.0
    assert s.screening.active_learning.break_threshold == 10.0


def test_full_file_values_and_units(tmp_path):
    s = load_search(write(tmp_path, FULL))
    assert s.name == "cu-pd" and s.seed == 7
    assert s.candidates.enumerate.lattices == ("fcc", "bcc") and s.candidates.enumerate.max_atoms == 6
    assert s.candidates.prototypes == ("L1_2", "B2")
    assert s.candidates.random.count == 10
    assert s.reference.relax_settings.fmax == 0.02
    assert s.reference.relax_settings.max_steps == 100
    assert s.reference.name == "emt"
    assert [(st.level, st.window_sigmas) for st in s.screening.stages] == [(8, 3.0), (12, 4.0)]
    assert s.screening.relax.stress_tol == pytest.approx(0.2 * GPa)  # GPa in the file, eV/Å³ inside
    assert s.screening.relax.batch_size == 16
    assert s.screening.training.cv_folds == 3 and s.screening.training.max_iter == 200
    assert s.screening.active_learning.max_rounds == 4


BAD = {
    "unknown_element": ("elements: [Cu, Xx]\n", "elements[1]"),
    "duplicate_element": ("elements: [Cu, Cu]\n", "elements[1]"),
    "missing_elements": ("name: foo\nseed: 1\n", "elements"),
    "elements_not_list": ("elements: CuPd\n", "elements"),
    "too_many_elements": ("elements: [Cu, Pd, Au, Ag, Ni]\n", "elements"),
    "unknown_top_key": ("elements: [Cu]\nelemnts: [Pd]\n", "elemnts"),
    "typo_in_screening": (MINIMAL + "screening: {stagse: []}\n", "screening.stagse"),
    "negative_seed": (MINIMAL + "seed: -1\n", "seed"),
    "seed_is_string": (MINIMAL + "seed: one\n", "seed"),
    "negative_max_atoms": (MINIMAL + "candidates: {enumerate: {max_atoms: -3}}\n", "candidates.enumerate.max_atoms"),
    "max_atoms_float": (MINIMAL + "candidates: {enumerate: {max_atoms: 4.5}}\n", "candidates.enumerate.max_atoms"),
    "min_gt_max_atoms": (MINIMAL + "candidates: {enumerate: {min_atoms: 5, max_atoms: 2}}\n",
                         "candidates.enumerate.min_atoms"),
    "unknown_lattice": (MINIMAL + "candidates: {enumerate: {lattices: [fcc, diamondz]}}\n",
                        "candidates.enumerate.lattices[1]"),
    "random_without_count": (MINIMAL + "candidates: {random: {max_atoms: 8}}\n", "candidates.random.count"),
    "random_zero_count": (MINIMAL + "candidates: {random: {count: 0}}\n", "candidates.random.count"),
    "no_candidate_source": (MINIMAL + "candidates: {enumerate: false, prototypes: false}\n", "candidates"),
    "unknown_prototype": (MINIMAL + "candidates: {prototypes: [L1_2, Z9_9]}\n", "candidates.prototypes[1]"),
    "prototypes_bad_string": (MINIMAL + "candidates: {prototypes: some}\n", "candidates.prototypes"),
    "unknown_calculator": (MINIMAL + "reference: {calculator: vaps}\n", "reference.calculator"),
    "negative_fmax": (MINIMAL + "reference: {calculator: emt, relax: {fmax: -0.01}}\n", "reference.relax.fmax"),
    "reference_unknown_key": (MINIMAL + "reference: {calculator: emt, ecutt: 400}\n", "reference.ecutt"),
    "reference_timeout_negative": (MINIMAL + "reference: {calculator: emt, timeout: -5}\n", "reference.timeout"),
    "unknown_optimizer": (MINIMAL + "screening: {relax: {optimizer: lbfgs}}\n", "screening.relax.optimizer"),
    "zero_max_steps": (MINIMAL + "screening: {relax: {max_steps: 0}}\n", "screening.relax.max_steps"),
    "odd_level": (MINIMAL + "screening: {stages: [{level: 7}]}\n", "screening.stages[0].level"),
    "level_too_high": (MINIMAL + "screening: {stages: [{level: 30}]}\n", "screening.stages[0].level"),
    "stage_without_level": (MINIMAL + "screening: {stages: [{window: 4}]}\n", "screening.stages[0].level"),
    "negative_window": (MINIMAL + "screening: {stages: [{level: 10, window: -4}]}\n", "screening.stages[0].window"),
    "empty_stages": (MINIMAL + "screening: {stages: []}\n", "screening.stages"),
    "stages_not_list": (MINIMAL + "screening: {stages: {level: 10}}\n", "screening.stages"),
    "break_below_select": (MINIMAL + "screening: {active_learning: {select_threshold: 5, break_threshold: 3}}\n",
                           "screening.active_learning.break_threshold"),
    "threshold_is_text": (MINIMAL + "screening: {active_learning: {select_threshold: high}}\n",
                          "screening.active_learning.select_threshold"),
    "cutoffs_reversed": (MINIMAL + "screening: {training: {min_dist: 5.0, max_dist: 2.0}}\n",
                         "screening.training.max_dist"),
    "dedup_not_bool": (MINIMAL + "candidates: {dedup: maybe}\n", "candidates.dedup"),
    "bad_name": ("name: ../../etc\nelements: [Cu]\n", "name"),
    "top_level_list": ("- Cu\n- Pd\n", ""),
    "empty_file": ("", ""),
    "yaml_syntax": ("elements: [Cu, Pd\nseed: 1\n", "line"),
    "tab_indentation": ("elements:\n\t- Cu\n", "line"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_search_is_one_line_exit_2_nothing_written(case, tmp_path, capsys, monkeypatch):
    text, key = BAD[case]
    path = write(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("csp: error: ") and str(path) in lines[0]
    assert key in lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # nothing written (no runs/ directory)


def test_unreadable_and_missing_files(tmp_path, capsys):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00elements")
    unreadable = tmp_path / "locked.yaml"
    unreadable.write_text(MINIMAL)
    unreadable.chmod(0)
    paths = [tmp_path / "nope.yaml", tmp_path, binary]
    if os.geteuid() != 0:  # root reads any file; the mode test is meaningful for other users
        paths.append(unreadable)
    for path in paths:
        assert main(["run", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("csp: error: cannot read") and str(path) in err and "\n" not in err


def test_typo_suggests_the_right_key(tmp_path):
    with pytest.raises(InputError, match="did you mean 'max_atoms'"):
        load_search(write(tmp_path, MINIMAL + "candidates: {enumerate: {max_atom: 4}}\n"))
    with pytest.raises(InputError, match="did you mean 'gpaw'"):
        load_search(write(tmp_path, MINIMAL + "reference: {calculator: gpa}\n"))


def test_import_path_calculator_is_accepted(tmp_path):
    s = load_search(write(tmp_path, MINIMAL + "reference: {calculator: ase.calculators.lj.LennardJones}\n"))
    assert s.reference.name == "ase.calculators.lj.LennardJones"


def test_defaults_are_the_dataclass_defaults(tmp_path):
    from csp.config import CandidateSettings, ScreeningSettings
    from csp.reference import ReferenceRelaxSettings

    s = load_search(write(tmp_path, MINIMAL))
    assert s.screening == ScreeningSettings() and s.candidates == CandidateSettings()
    assert s.reference.relax_settings == ReferenceRelaxSettings()


def test_allowed_names_come_from_the_registries(tmp_path, monkeypatch):
    from csp.reference import BACKENDS
    from csp.relax import OPTIMIZERS
    from csp.structures.lattices import BUILTIN

    bad = message_of(tmp_path, "candidates: {enumerate: {lattices: [fcx]}}\n")
    assert f"expected one of {', '.join(BUILTIN)}, got 'fcx'" in bad
    assert f"allowed: {', '.join(BACKENDS)} or an import path" in message_of(tmp_path, "reference: {calculator: emtt}\n")
    assert f"expected one of {', '.join(OPTIMIZERS)}," in message_of(tmp_path, "screening: {relax: {optimizer: x}}\n")
    # a new registry entry is a valid name at once
    monkeypatch.setitem(BUILTIN, "fcx", BUILTIN["fcc"])
    monkeypatch.setitem(BACKENDS, "emtt", BACKENDS["emt"])
    s = load_search(write(tmp_path, MINIMAL + "candidates: {enumerate: {lattices: [fcx]}}\nreference: {calculator: emtt}\n"))
    assert s.candidates.enumerate.lattices == ("fcx",) and s.reference.name == "emtt"


def message_of(tmp_path, text: str) -> str:
    with pytest.raises(InputError) as err:
        load_search(write(tmp_path, MINIMAL + text))
    return str(err.value)


def test_message_format_is_file_key_message(tmp_path):
    path = write(tmp_path, MINIMAL + "screening: {stages: [{level: 10, window: -4}]}\n")
    with pytest.raises(InputError) as err:
        load_search(path)
    assert str(err.value) == f"{path}: key 'screening.stages[0].window': expected a positive number, got -4"


def test_false_or_null_turns_a_source_off(tmp_path):
    s = load_search(write(tmp_path, MINIMAL + "candidates: {enumerate: null, random: false, max_atoms: null}\n"))
    assert s.candidates.enumerate is None and s.candidates.random is None and s.candidates.max_atoms is None
