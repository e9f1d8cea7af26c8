"""MLIP-3's own files: `mlp train` output and `.almtp` potentials carry a binary `#MVS_v1.1`
selection block after the potential text. csp reads them (potential and active set), reproduces
MLIP's `calculate_efs` and `calculate_grade` with them, and writes the block back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from csp.cli import main
from csp.errors import InputError
from csp.mtp.grade import ActiveSet, _data, grade, grade_from_site_basis, neighborhood_rows
from csp.mtp.io import (MVS_MARKER, format_mlip_selection, format_mtp, parse_mlip_selection, parse_mtp,
                        read_almtp, read_cfg, read_mtp, split_mtp_bytes, write_cfg, write_mtp)

CONF = Path(__file__).resolve().parents[1] / "data" / "conformance"
TRAIN = CONF / "mlip-train"
GRADE = CONF / "mlip-grade"


def params_equal(a, b) -> bool:
    return (np.array_equal(a.get_parameters(), b.get_parameters())
            and np.array_equal(a.alpha_index_basic, b.alpha_index_basic)
            and np.array_equal(a.alpha_index_times, b.alpha_index_times)
            and np.array_equal(a.alpha_moment_mapping, b.alpha_moment_mapping)
            and (a.min_dist, a.max_dist, a.scaling) == (b.min_dist, b.max_dist, b.scaling))


# ---------------------------------------------------------------------- strings and files

def test_parse_and_format_are_the_string_forms_of_read_and_write(tmp_path):
    mtp = read_mtp(GRADE / "pot10.mtp")
    text = format_mtp(mtp)
    assert isinstance(text, str) and text.startswith("MTP\n")
    again = parse_mtp(text)
    assert params_equal(again, mtp) and again.metadata == mtp.metadata
    write_mtp(mtp, tmp_path / "p.mtp")
    assert (tmp_path / "p.mtp").read_text() == text
    assert params_equal(parse_mtp((GRADE / "pot10.mtp").read_text()), mtp)


def test_parse_cfg_is_the_string_form_of_read_cfg():
    from csp.mtp.io import format_cfg, parse_cfg

    cfgs = read_cfg(TRAIN / "train25.cfg")
    again = parse_cfg("\n".join(format_cfg(c) for c in cfgs))
    assert len(again) == len(cfgs)
    assert all(np.array_equal(a.forces, b.forces) and a.energy == b.energy for a, b in zip(again, cfgs))
    with pytest.raises(InputError, match="^mem:1: expected BEGIN_CFG"):
        parse_cfg("nonsense\n", source="mem")


def test_parse_mtp_names_its_source_in_errors():
    with pytest.raises(InputError, match="^campaign-model: missing 'species_count'"):
        parse_mtp("MTP\nversion = 1.1.0\n", source="campaign-model")


@pytest.mark.parametrize("path", [TRAIN / "m10_train25.mtp", GRADE / "nbh10.almtp"])
def test_mlip_files_with_a_binary_selection_block_are_read(path):
    data = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # what made the text reader crash
    mtp = read_mtp(path)
    text, block = split_mtp_bytes(data)
    assert block.startswith(MVS_MARKER)
    assert params_equal(parse_mtp(text.decode()), mtp)
    assert mtp.n_params == 41


def test_almtp_potential_is_the_potential_it_was_made_from():
    # nbh10.almtp = `mlp train pot10.mtp ... --iteration_limit=0`: same coefficients
    assert params_equal(read_mtp(GRADE / "nbh10.almtp"), read_mtp(GRADE / "pot10.mtp"))


def test_selection_block_layout():
    mtp, sel = read_almtp(GRADE / "nbh10.almtp")
    n = mtp.n_params
    assert sel.mode == "neighborhood"
    assert (sel.energy_weight, sel.force_weight, sel.stress_weight, sel.site_en_weight) == (0, 0, 0, 1)
    assert sel.weight_scaling == 2
    assert sel.matrix.shape == sel.inverse.shape == (n, n) and sel.links.shape == (n, 2)
    assert np.abs(sel.matrix @ sel.inverse - np.eye(n)).max() < 1e-6  # A^-1 (stored transposed)
    assert len(sel.configurations) == 25
    real = sel.links[:, 0] >= 0
    assert sel.links[real, 0].max() == len(sel.configurations) - 1
    assert np.all(sel.links[~real] == -1)
    # initial rows MLIP never replaced: eps * e_k (MLIP's threshold_init, here 1e-6)
    init = sel.matrix[~real]
    assert np.all(np.count_nonzero(init, axis=1) == 1) and np.allclose(np.abs(init).max(axis=1), 1e-6)


def test_selection_block_round_trip(tmp_path):
    mtp, sel = read_almtp(GRADE / "nbh10.almtp")
    block = format_mlip_selection(sel)
    again = parse_mlip_selection(block.lstrip(b"\n"), mtp.n_params)
    assert np.array_equal(again.matrix, sel.matrix) and np.array_equal(again.inverse, sel.inverse)
    assert np.array_equal(again.links, sel.links) and again.mode == sel.mode
    assert len(again.configurations) == len(sel.configurations)
    for a, b in zip(again.configurations, sel.configurations):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.types, b.types)
    write_mtp(mtp, tmp_path / "copy.almtp", selection=sel)
    mtp2, sel2 = read_almtp(tmp_path / "copy.almtp")
    assert params_equal(mtp2, mtp) and np.array_equal(sel2.inverse, sel.inverse)


def test_truncated_selection_block_is_an_input_error(tmp_path):
    data = (GRADE / "nbh10.almtp").read_bytes()
    bad = tmp_path / "cut.almtp"
    bad.write_bytes(data[:len(data) // 40])
    assert params_equal(read_mtp(bad), read_mtp(GRADE / "pot10.mtp"))  # text part intact
    with pytest.raises(InputError, match="truncated"):
        read_almtp(bad)


# ---------------------------------------------------------------------- MLIP's outputs

def test_calc_efs_reproduces_mlp_calculate_efs(tmp_path, capsys):
    out = tmp_path / "out.cfg"
    assert main(["mtp", "calc-efs", str(TRAIN / "m10_train25.mtp"), str(TRAIN / "train25.cfg"), str(out)]) == 0
    ours, ref = read_cfg(out), read_cfg(TRAIN / "ev_mlp_m10_train25.mtp.cfg")
    assert len(ours) == len(ref) == 26
    for a, b in zip(ours, ref):
        assert abs(a.energy - b.energy) / a.size < 1e-6
        assert np.abs(a.forces - b.forces).max() < 2e-6
        assert np.abs(a.plus_stress - b.plus_stress).max() < 1e-4


def _mlip_grades():
    ref = read_cfg(GRADE / "m_mild_10.cfg")
    return (np.array([float(c.features["MV_grade"]) for c in ref]),
            [c.atom_data["nbh_grades"] for c in ref])


def assert_grades_match(per_cfg, per_atom):
    mv, nbh = _mlip_grades()
    # MLIP prints MV_grade with 6 decimals, nbh_grades with 5
    assert np.all(np.abs(per_cfg - mv) <= 5e-7 + 1e-6 * mv)
    for ours, theirs in zip(per_atom, nbh):
        assert np.all(np.abs(ours - theirs) <= 5e-6 + 1e-6 * theirs)


def test_grades_with_mlips_active_set_reproduce_mlp_calculate_grade():
    mtp, sel = read_almtp(GRADE / "nbh10.almtp")
    aset = ActiveSet.from_mlip(mtp, sel)
    assert aset.coefficients == "all" and aset.mode == "neighborhood"
    per_cfg, per_atom = grade(mtp, aset, read_cfg(GRADE / "mild.cfg"), per_atom=True)
    assert_grades_match(per_cfg, per_atom)


def test_calc_grade_without_training_set_uses_the_stored_active_set(tmp_path, capsys):
    out = tmp_path / "graded.cfg"
    assert main(["mtp", "calc-grade", str(GRADE / "nbh10.almtp"), str(GRADE / "mild.cfg"), str(out)]) == 0
    got = read_cfg(out)
    assert_grades_match(np.array([float(c.features["MV_grade"]) for c in got]),
                        [c.atom_data["nbh_grades"] for c in got])


def test_calc_grade_four_argument_form_still_builds_from_the_training_set(tmp_path, capsys):
    out = tmp_path / "graded.cfg"
    train = tmp_path / "train.cfg"
    write_cfg(train, read_cfg(GRADE / "train101.cfg")[:10])
    assert main(["mtp", "calc-grade", str(GRADE / "pot10.mtp"), str(train), str(GRADE / "mild.cfg"),
                 str(out)]) == 0
    assert "linear coefficients" in capsys.readouterr().out
    assert all("MV_grade" in c.features for c in read_cfg(out))


def test_calc_grade_without_any_active_set_is_bad_input(tmp_path, capsys):
    assert main(["mtp", "calc-grade", str(GRADE / "pot10.mtp"), str(GRADE / "mild.cfg"),
                 str(tmp_path / "o.cfg")]) == 2
    assert "give a training set" in capsys.readouterr().err


def test_all_coefficient_rows_reproduce_mlips_active_rows():
    """The rows of MLIP's active set are CalcSiteEnergyGrad of neighbourhoods of the selected
    configurations: csp's rows over all coefficients must be the same numbers."""
    mtp, sel = read_almtp(TRAIN / "m10_train25.mtp")
    data = _data(mtp, sel.configurations, None)
    rows = neighborhood_rows(mtp, data, "all")
    lin = neighborhood_rows(mtp, data, "linear")
    assert np.array_equal(rows[:, mtp.radial_coeffs.size:], lin)
    checked = 0
    for k, (c, eqn) in enumerate(sel.links):
        if c < 0:
            continue
        n = data.natoms[c]
        atom = eqn - (1 + 3 * n + 9)  # MLIP's equation index of a neighbourhood row
        b = rows[data.atom_off[c] + atom]
        assert np.abs(b - sel.matrix[k]).max() <= 1e-12 * np.abs(sel.matrix[k]).max()
        checked += 1
    assert checked == 35


def test_all_coefficient_rows_are_the_derivative_of_the_site_energy():
    from csp.mtp.evaluate import calc_efs_configurations

    mtp = read_mtp(GRADE / "pot10.mtp")
    cfg = read_cfg(GRADE / "mild.cfg")[:1]
    rows = neighborhood_rows(mtp, _data(mtp, cfg, None), "all")
    theta = mtp.get_parameters()
    rng = np.random.default_rng(0)
    for p in rng.choice(mtp.radial_coeffs.size, 6, replace=False):
        h = 1e-6 * max(abs(theta[p]), 1e-3)
        e = []
        for s in (1, -1):
            t = theta.copy()
            t[p] += s * h
            e.append(calc_efs_configurations(mtp.with_parameters(t), cfg).energies[0])
        fd = (e[0] - e[1]) / (2 * h)
        assert abs(fd - rows[:, p].sum()) <= 1e-6 * max(1.0, abs(fd))


def test_mlip_active_set_grades_its_own_training_set_within_one():
    mtp, sel = read_almtp(TRAIN / "m10_train25.mtp")
    aset = ActiveSet.from_mlip(mtp, sel)
    assert grade(mtp, aset, read_cfg(TRAIN / "train25.cfg")).max() <= 1.0 + 1e-6
    assert np.allclose(grade(mtp, aset, sel.configurations), 1.0)


def test_fused_site_basis_grade_refuses_an_all_coefficient_active_set():
    mtp, sel = read_almtp(GRADE / "nbh10.almtp")
    aset = ActiveSet.from_mlip(mtp, sel)
    with pytest.raises(ValueError, match="grade_flat"):
        grade_from_site_basis(mtp, aset, np.zeros((1, mtp.alpha_scalar_moments)), np.zeros(1, np.int64),
                              np.array([0, 1]))


def test_all_coefficient_active_set_belongs_to_the_moment_coefficients_too():
    mtp, sel = read_almtp(GRADE / "nbh10.almtp")
    aset = ActiveSet.from_mlip(mtp, sel)
    other = mtp.copy()
    other.moment_coeffs = other.moment_coeffs * 1.01
    with pytest.raises(InputError, match="does not belong"):
        aset.check(other)


# ---------------------------------------------------------------------- linear or all coefficients

def test_csp_active_sets_default_to_the_linear_coefficients():
    mtp = read_mtp(GRADE / "pot10.mtp")
    train = read_cfg(GRADE / "train101.cfg")[:5]
    assert ActiveSet.build(mtp, train).coefficients == "linear"
    assert ActiveSet.build(mtp, train, coefficients="all").matrix.shape == (41, 41)
    with pytest.raises(InputError, match="coefficients"):
        ActiveSet.build(mtp, train, coefficients="radial")


def test_the_reasons_for_linear_rank_and_agreement():
    """The numbers behind the default (csp/mtp/grade.py): from 25 configurations the linear
    configuration-mode active set is all real rows, the all-coefficient one cannot be (exact
    null directions), and both flag the same perturbed structures at gamma 2.1 and 10."""
    mtp = read_mtp(GRADE / "pot10.mtp")
    train = read_cfg(GRADE / "train101.cfg")
    mild = read_cfg(GRADE / "mild.cfg")
    sub = train[::4]  # 26 configurations
    lin = ActiveSet.build(mtp, sub, mode="configuration")
    full = ActiveSet.build(mtp, sub, mode="configuration", coefficients="all")
    assert np.all(lin.owners >= 0)
    assert np.sum(full.owners < 0) >= 41 - 34
    rows = neighborhood_rows(mtp, _data(mtp, train, None), "all")
    rows = rows / np.linalg.norm(rows, axis=0)
    assert np.linalg.matrix_rank(rows, tol=1e-10 * np.linalg.norm(rows, 2)) <= 35
    g_lin, g_all = grade(mtp, lin, mild), grade(mtp, full, mild)
    for gamma in (2.1, 10.0):
        assert np.mean((g_lin > gamma) == (g_all > gamma)) >= 0.95


def test_all_coefficient_active_set_classifies_like_mlips():
    mtp = read_mtp(GRADE / "pot10.mtp")
    train = read_cfg(GRADE / "train101.cfg")
    mild = read_cfg(GRADE / "mild.cfg")
    mv, _ = _mlip_grades()
    agree = {}
    for coefficients in ("linear", "all"):
        g = grade(mtp, ActiveSet.build(mtp, train, coefficients=coefficients), mild)
        agree[coefficients] = [np.mean((g > t) == (mv > t)) for t in (2.1, 10.0)]
    assert min(agree["all"]) >= 0.95
    assert agree["all"][0] >= agree["linear"][0] and agree["all"][1] >= agree["linear"][1]


# ---------------------------------------------------------------------- csp writes MLIP's block

@pytest.mark.parametrize("mode", ["neighborhood", "configuration"])
def test_csp_all_coefficient_active_set_written_as_mlip_block(tmp_path, mode):
    mtp = read_mtp(GRADE / "pot10.mtp")
    train = read_cfg(GRADE / "train101.cfg")[:20]
    aset = ActiveSet.build(mtp, train, mode=mode, coefficients="all")
    sel = aset.to_mlip(mtp, train)
    assert sel.mode == mode
    # every linked row is the row MLIP would compute for that equation of that configuration
    data = _data(mtp, sel.configurations, None)
    rows = neighborhood_rows(mtp, data, "all")
    for k, (c, eqn) in enumerate(sel.links):
        if c < 0:
            assert eqn == -1 and np.count_nonzero(sel.matrix[k]) == 1
            continue
        a0, a1 = data.atom_off[c], data.atom_off[c + 1]
        row = rows[a0:a1].mean(axis=0) if mode == "configuration" else rows[a0 + eqn - (1 + 3 * (a1 - a0) + 9)]
        assert np.allclose(row, sel.matrix[k], rtol=1e-12, atol=1e-12 * np.abs(sel.matrix[k]).max())
    write_mtp(mtp, tmp_path / "p.almtp", selection=sel)
    mtp2, sel2 = read_almtp(tmp_path / "p.almtp")
    mild = read_cfg(GRADE / "mild.cfg")[:10]
    assert np.allclose(grade(mtp2, ActiveSet.from_mlip(mtp2, sel2), mild), grade(mtp, aset, mild), rtol=1e-9)
    with pytest.raises(InputError, match="all coefficients"):
        ActiveSet.build(mtp, train, mode=mode).to_mlip(mtp, train)


def test_train_writes_an_almtp_that_calc_grade_reads_without_training_set(tmp_path, capsys):
    pot = tmp_path / "pot.almtp"
    assert main(["mtp", "train", str(GRADE / "pot10.mtp"), str(TRAIN / "train25.cfg"), "-o", str(pot),
                 "--max-iter", "2", "--grade-coefficients", "all"]) == 0
    mtp, sel = read_almtp(pot)
    assert sel is not None and sel.mode == "neighborhood" and sel.matrix.shape == (41, 41)
    (tmp_path / "pot.almtp.als").unlink()  # only the block in the file is left
    out = tmp_path / "g.cfg"
    assert main(["mtp", "calc-grade", str(pot), str(TRAIN / "train25.cfg"), str(out)]) == 0
    assert "all coefficients" in capsys.readouterr().out
    assert max(float(c.features["MV_grade"]) for c in read_cfg(out)) <= 1.0 + 1e-6
