"""Reproduce MLIP's own `mlp calc-efs` output for six MLIP-trained potentials."""

import numpy as np
import pytest

from csp.mtp.evaluate import Batch, calc_efs, calc_efs_configurations
from csp.mtp.io import cfg_to_atoms, read_cfg, read_mtp
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"
FOLDERS = ["cubic_10", "cubic_16", "cubic_20", "multi_06", "multi_10", "noncubic_10"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_reproduces_mlip_calc_efs(folder):
    mtp = read_mtp(CONF / folder / "pot.mtp")
    cin, ref = read_cfg(CONF / folder / "in.cfg"), read_cfg(CONF / folder / "out.cfg")
    res = calc_efs_configurations(mtp, cin)
    n = np.array([c.size for c in ref])
    e_ref = np.array([c.energy for c in ref])
    assert np.abs(res.energies - e_ref).max() / n.min() < 1e-6
    np.testing.assert_allclose(res.forces, np.concatenate([c.forces for c in ref]), rtol=0, atol=2e-6)
    vol = np.array([c.volume for c in cin])
    plus = -res.stresses * vol[:, None]
    np.testing.assert_allclose(plus, np.array([c.plus_stress for c in ref]), rtol=0, atol=1e-4)
    # per-atom energies add up; the input reference (EMT) differs, so MLIP really recomputed
    np.testing.assert_allclose(np.add.reduceat(res.site_energies, Batch.from_configurations(cin).offsets[:-1]),
                               res.energies, rtol=1e-12)
    assert np.abs(np.array([c.energy for c in cin]) - e_ref).max() > 1e-4


def test_single_structure_api_matches_mlip():
    mtp = read_mtp(CONF / "multi_10" / "pot.mtp")
    ref = read_cfg(CONF / "multi_10" / "out.cfg")[7]
    atoms = cfg_to_atoms(read_cfg(CONF / "multi_10" / "in.cfg")[7], ["Au", "Ag", "Cu"])
    efs = calc_efs(mtp, atoms, ["Au", "Ag", "Cu"])
    assert abs(efs.energy - ref.energy) < 1e-6 * len(atoms)
    np.testing.assert_allclose(efs.forces, ref.forces, atol=2e-6, rtol=0)
    np.testing.assert_allclose(-efs.stress * atoms.get_volume(), ref.plus_stress, atol=1e-4, rtol=0)
    assert efs.energies.shape == (len(atoms),) and abs(efs.energies.sum() - efs.energy) < 1e-10
