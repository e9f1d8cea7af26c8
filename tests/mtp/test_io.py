"""MLIP file formats: exact round trips on the conformance data, Atoms conversion, errors."""

import numpy as np
import pytest
from ase.build import bulk

from csp.errors import InputError
from csp.mtp.io import (Configuration, atoms_to_cfg, cfg_to_atoms, read_cfg, read_mtp, write_cfg,
                        write_mtp)
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"
FOLDERS = ["cubic_10", "cubic_16", "cubic_20", "multi_06", "multi_10", "noncubic_10"]
SCALARS = {"cubic_10": 16, "cubic_16": 92, "cubic_20": 288, "multi_06": 5, "multi_10": 16,
           "noncubic_10": 16}


def assert_same_mtp(a, b):
    for key in ("species_count", "min_dist", "max_dist", "radial_basis_size", "radial_funcs_count",
                "alpha_moments_count", "scaling", "potential_name", "potential_tag", "version",
                "radial_basis_type", "metadata"):
        assert getattr(a, key) == getattr(b, key), key
    for key in ("radial_coeffs", "alpha_index_basic", "alpha_index_times", "alpha_moment_mapping",
                "species_coeffs", "moment_coeffs"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


def assert_same_cfg(a: Configuration, b: Configuration):
    for key in ("cell", "positions", "types", "forces", "plus_stress"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=key)
    assert a.energy == b.energy and a.energy_weight == b.energy_weight
    assert a.features == b.features
    assert a.atom_data.keys() == b.atom_data.keys()
    for k in a.atom_data:
        np.testing.assert_array_equal(a.atom_data[k], b.atom_data[k])


@pytest.mark.parametrize("folder", FOLDERS)
def test_mtp_round_trip(folder, tmp_path):
    mtp = read_mtp(CONF / folder / "pot.mtp")
    assert mtp.alpha_scalar_moments == SCALARS[folder] == len(mtp.moment_coeffs)
    assert mtp.radial_coeffs.shape == (mtp.species_count, mtp.species_count, mtp.radial_funcs_count,
                                       mtp.radial_basis_size)
    mtp.metadata["csp_elements"] = "Au,Ag,Cu"
    write_mtp(mtp, tmp_path / "p.almtp")
    back = read_mtp(tmp_path / "p.almtp")
    assert_same_mtp(mtp, back)
    assert back.elements == ["Au", "Ag", "Cu"]
    theta = mtp.get_parameters()
    assert theta.size == mtp.n_params
    np.testing.assert_array_equal(mtp.with_parameters(theta).get_parameters(), theta)
    np.testing.assert_array_equal(theta[: mtp.radial_coeffs.size], mtp.radial_coeffs.ravel())


def test_mtp_reads_mlip_numbers_exactly():
    mtp = read_mtp(CONF / "cubic_10" / "pot.mtp")
    assert mtp.scaling == 2.544267124323098e-02
    assert mtp.radial_coeffs[0, 0, 2, 7] == -2.292752423791788e-01
    assert mtp.moment_coeffs[-1] == -1.941899023642121e-01
    assert mtp.alpha_index_times[14].tolist() == [5, 5, 2, 30]
    assert mtp.potential_tag == ""


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("name", ["in.cfg", "out.cfg"])
def test_cfg_round_trip(folder, name, tmp_path):
    cfgs = read_cfg(CONF / folder / name)
    assert len(cfgs) == 25
    for c in cfgs:
        assert c.size in (27, 32) and c.cell is not None
        assert c.energy is not None and c.forces.shape == (c.size, 3) and c.plus_stress.shape == (6,)
    write_cfg(tmp_path / "x.cfg", cfgs)
    back = read_cfg(tmp_path / "x.cfg")
    assert len(back) == len(cfgs)
    for a, b in zip(cfgs, back):
        assert_same_cfg(a, b)


def test_cfg_values_and_extra_columns():
    cfgs = read_cfg(CONF / "multi_10" / "out.cfg")
    c = cfgs[0]
    assert c.types[:3].tolist() == [0, 1, 2]
    assert c.energy == 7.361913230306
    assert c.plus_stress.tolist() == [80.64915, 76.44863, 80.64915, -0.37300, -4.87818, -0.37300]
    assert c.forces[0].tolist() == [-1.215224, -0.005951, -1.215224]
    assert c.atom_data["nbh_grades"][20] == 1.0 and c.atom_data["nbh_grades"][0] == 0.65934
    assert c.features == {"ID": "0", "MV_grade": "1.000000"}
    assert c.cell[0].tolist() == [0.0, 5.415, 5.415]


def test_atoms_conversion_round_trip():
    c = read_cfg(CONF / "multi_10" / "out.cfg")[3]
    atoms = cfg_to_atoms(c, ["Au", "Ag", "Cu"])
    assert atoms.get_chemical_symbols()[:3] == ["Au", "Ag", "Cu"]
    assert atoms.get_potential_energy() == c.energy
    np.testing.assert_allclose(atoms.get_stress() * atoms.get_volume(), -c.plus_stress, rtol=1e-14)
    np.testing.assert_array_equal(atoms.arrays["nbh_grades"], c.atom_data["nbh_grades"])
    back = atoms_to_cfg(atoms, ["Au", "Ag", "Cu"])
    assert_same_cfg(c, Configuration(**{**back.__dict__, "plus_stress": c.plus_stress}))
    np.testing.assert_allclose(back.plus_stress, c.plus_stress, rtol=1e-13)


def test_nonperiodic_and_direct_coordinates(tmp_path):
    p = tmp_path / "d.cfg"
    p.write_text("BEGIN_CFG\n Size\n 2\n Supercell\n 2 0 0\n 0 3 0\n 0 0 4\n"
                 " AtomData: id type direct_x direct_y direct_z\n 1 0 0 0 0\n 2 1 0.5 0.5 0.5\n"
                 " EnergyWeight\n 0.5\nEND_CFG\n\nBEGIN_CFG\n Size\n 1\n"
                 " AtomData: id type cartes_x cartes_y cartes_z\n 1 0 1 2 3\nEND_CFG\n")
    a, b = read_cfg(p)
    np.testing.assert_array_equal(a.positions[1], [1.0, 1.5, 2.0])
    assert a.energy_weight == 0.5 and a.energy is None and a.forces is None
    assert b.cell is None
    atoms = cfg_to_atoms(b, ["Cu"])
    assert not atoms.pbc.any()
    assert atoms_to_cfg(atoms, ["Cu"]).cell is None
    with pytest.raises(InputError, match="Pd"):
        atoms_to_cfg(bulk("Pd"), ["Cu"])


@pytest.mark.parametrize("text, line", [
    ("BEGIN_CFG\n Size\n 2\n AtomData: id type cartes_x cartes_y cartes_z\n 1 0 0 0 0\n 2 0 x 0 0\nEND_CFG\n", 6),
    ("BEGIN_CFG\n Size\n 1\n AtomData: id type cartes_x cartes_y cartes_z\n 1 0 0 0\nEND_CFG\n", 5),
    ("BEGIN_CFG\n Size\n 1\n Energy\n abc\nEND_CFG\n", 5),
    ("BEGIN_CFG\n Size\n 1\n Bogus\nEND_CFG\n", 4),
    ("hello\n", 1),
    ("BEGIN_CFG\n Size\n 1\n", 3),
])
def test_malformed_cfg_names_file_and_line(tmp_path, text, line):
    p = tmp_path / "bad.cfg"
    p.write_text(text)
    with pytest.raises(InputError, match=rf"bad\.cfg:{line}:"):
        read_cfg(p)


def test_malformed_mtp_names_file_and_line(tmp_path):
    good = (CONF / "cubic_10" / "pot.mtp").read_text().splitlines()
    bad = list(good)
    bad[4] = "species_count = one"
    (tmp_path / "a.mtp").write_text("\n".join(bad))
    with pytest.raises(InputError, match=r"a\.mtp:5:"):
        read_mtp(tmp_path / "a.mtp")
    bad = [ln for ln in good if not ln.startswith("moment_coeffs")]
    (tmp_path / "b.mtp").write_text("\n".join(bad))
    with pytest.raises(InputError, match=r"b\.mtp.*moment_coeffs"):
        read_mtp(tmp_path / "b.mtp")
    bad = [ln.replace("{0, 0, 0, 0}, {0, 1, 0, 0}", "{0, 0, 0, 0}, {0, 1, 0}") for ln in good]
    (tmp_path / "c.mtp").write_text("\n".join(bad))
    with pytest.raises(InputError, match=r"c\.mtp:\d+:.*alpha_index_basic"):
        read_mtp(tmp_path / "c.mtp")
    (tmp_path / "d.mtp").write_text("not a potential\n")
    with pytest.raises(InputError, match=r"d\.mtp:1:"):
        read_mtp(tmp_path / "d.mtp")
