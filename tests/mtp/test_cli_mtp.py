"""`csp mtp init` and `csp mtp calc-efs` from the command line."""

import subprocess
import sys

import numpy as np

from csp.cli import main
from csp.mtp.io import read_cfg, read_mtp
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"


def test_init_writes_potential(tmp_path, capsys):
    out = tmp_path / "init.mtp"
    assert main(["mtp", "init", "--level", "10", "--elements", "Cu,Pd", "--min-dist", "2.0",
                 "--max-dist", "5.0", "--seed", "7", "-o", str(out)]) == 0
    mtp = read_mtp(out)
    assert mtp.elements == ["Cu", "Pd"] and mtp.level == 10 and mtp.alpha_scalar_moments == 16
    assert mtp.radial_coeffs.shape == (2, 2, 3, 8) and mtp.min_dist == 2.0 and mtp.max_dist == 5.0
    assert "16 basis functions" in capsys.readouterr().out


def test_init_bad_input_is_one_line(tmp_path, capsys):
    assert main(["mtp", "init", "--level", "40", "--elements", "Cu", "--min-dist", "2",
                 "--max-dist", "5", "-o", str(tmp_path / "x.mtp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("csp: error:") and "level" in err and "\n" not in err
    assert main(["mtp"]) == 2


def test_calc_efs_reproduces_mlip(tmp_path):
    out = tmp_path / "out.cfg"
    proc = subprocess.run([sys.executable, "-m", "csp", "mtp", "calc-efs", str(CONF / "multi_10" / "pot.mtp"),
                           str(CONF / "multi_10" / "in.cfg"), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ours, ref = read_cfg(out), read_cfg(CONF / "multi_10" / "out.cfg")
    assert len(ours) == len(ref) == 25
    for a, b in zip(ours, ref):
        assert abs(a.energy - b.energy) < 1e-6 * a.size
        np.testing.assert_allclose(a.forces, b.forces, atol=2e-6, rtol=0)
        np.testing.assert_allclose(a.plus_stress, b.plus_stress, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.features == {}  # input features are kept; in.cfg has none


def test_calc_efs_bad_type_and_missing_file(tmp_path, capsys):
    cfg = tmp_path / "in.cfg"
    cfg.write_text("BEGIN_CFG\n Size\n 1\n Supercell\n 3 0 0\n 0 3 0\n 0 0 3\n"
                   " AtomData: id type cartes_x cartes_y cartes_z\n 1 5 0 0 0\nEND_CFG\n")
    assert main(["mtp", "calc-efs", str(CONF / "cubic_10" / "pot.mtp"), str(cfg), str(tmp_path / "o.cfg")]) == 2
    assert "type 5" in capsys.readouterr().err
    assert main(["mtp", "calc-efs", str(tmp_path / "nope.mtp"), str(cfg), str(tmp_path / "o.cfg")]) == 2


def test_calc_efs_bad_input_leaves_existing_output(tmp_path, capsys):
    out = tmp_path / "out.cfg"
    old = b"BEGIN_CFG\n previous results\nEND_CFG\n"
    out.write_bytes(old)
    bad = tmp_path / "bad.cfg"
    bad.write_text("BEGIN_CFG\n Size\n two\nEND_CFG\n")
    assert main(["mtp", "calc-efs", str(CONF / "cubic_10" / "pot.mtp"), str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("csp: error:") and err.count("\n") == 1
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.cfg", "out.cfg"]  # no temporary left
