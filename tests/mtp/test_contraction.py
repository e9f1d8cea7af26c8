"""Our contraction scheme: MLIP's counts, rotation invariance, linear independence, init."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from csp.errors import InputError
from csp.mtp.contraction import contraction_patterns, generate_scheme, init_mtp
from csp.mtp.io import read_mtp, write_mtp
from csp_testdata import CONFORMANCE

CONF = CONFORMANCE / "mtp"


def scalars(scheme, env, radial):
    """All scalar basis functions of a scheme for environments env (E,K,3) (or one (K,3)) with
    radial functions radial(mu, r) -- an independent numpy reference of the kernel's forward pass."""
    basic, times, mapping, n_alpha = scheme
    env = np.asarray(env)
    single = env.ndim == 2
    env = env[None] if single else env
    r = np.linalg.norm(env, axis=2)
    u = env / r[..., None]
    m = np.zeros((n_alpha, len(env)))
    for n, (mu, a, b, c) in enumerate(basic):
        m[n] = np.sum(radial(mu, r) * u[..., 0] ** a * u[..., 1] ** b * u[..., 2] ** c, axis=1)
    for i, j, w, k in times:
        m[k] += w * m[i] * m[j]
    out = m[mapping].T
    return out[0] if single else out


def radial(mu, r):
    return np.cos(1.3 * (mu + 1) * r) * np.exp(-0.4 * r * (mu + 1))


@pytest.mark.parametrize("level, count", [(2, 1), (4, 2), (6, 5), (8, 9), (10, 16), (16, 92), (20, 288)])
def test_counts_match_mlip(level, count):
    basic, times, mapping, n_alpha = generate_scheme(level)
    assert len(mapping) == len(set(mapping.tolist())) == count
    assert len(contraction_patterns(level)) == count
    assert basic[:, 0].max() + 1 == (level - 2) // 4 + 1
    # every contraction refers only to earlier moments: the file order is a valid evaluation order
    assert np.all(times[:, 3] >= len(basic)) and np.all(times[:, :2].max(axis=1) < times[:, 3])
    assert np.all(times[:, 2] > 0)


@pytest.mark.parametrize("folder", ["multi_06", "cubic_10", "cubic_16", "cubic_20"])
def test_per_level_counts_equal_mlip_templates(folder):
    mlip = read_mtp(CONF / folder / "pot.mtp")
    level = {"multi_06": 6, "cubic_10": 10, "cubic_16": 16, "cubic_20": 20}[folder]
    basic, times, mapping, n_alpha = generate_scheme(level)
    assert len(mapping) == mlip.alpha_scalar_moments
    # the same set of moment tensors M_{mu,nu} is needed
    assert {(m, a + b + c) for m, a, b, c in basic} == {(m, a + b + c) for m, a, b, c in mlip.alpha_index_basic}


def _rank(scheme, envs):
    A = scalars(scheme, envs, radial)
    A = A / np.linalg.norm(A, axis=0)
    s = np.linalg.svd(A, compute_uv=False)
    return int((s / s[0] > 1e-10).sum())


@pytest.mark.parametrize("level, folder", [(6, "multi_06"), (10, "cubic_10"), (16, "cubic_16"), (20, "cubic_20")])
def test_basis_is_rotation_invariant_and_as_rich_as_mlip(level, folder):
    scheme = generate_scheme(level)
    rng = np.random.default_rng(level)
    n = len(scheme[2])
    envs = rng.normal(0, 1.5, (n + 60, 7, 3))
    val = scalars(scheme, envs[:5], radial)
    for trial in range(5):
        R = Rotation.random(random_state=trial).as_matrix()
        rot = scalars(scheme, envs[trial] @ R.T, radial)
        np.testing.assert_allclose(rot, val[trial], rtol=1e-9, atol=1e-9 * np.abs(val[trial]).max())
        refl = scalars(scheme, envs[trial] * [-1, 1, 1], radial)  # invariant under reflection too
        np.testing.assert_allclose(refl, val[trial], rtol=1e-9, atol=1e-9 * np.abs(val[trial]).max())
    # same number of linearly independent functions as MLIP's template (which has polynomial
    # identities among its invariants from level 16 on, e.g. Cayley-Hamilton for tr(M02^4))
    mlip = read_mtp(CONF / folder / "pot.mtp")
    mlip_scheme = (mlip.alpha_index_basic, mlip.alpha_index_times, mlip.alpha_moment_mapping,
                   mlip.alpha_moments_count)
    ours, theirs = _rank(scheme, envs), _rank(mlip_scheme, envs)
    assert ours == theirs
    assert ours == n if level <= 10 else ours < n


def test_level_28_is_generated():
    basic, times, mapping, n_alpha = generate_scheme(28)
    assert len(mapping) > 2000 and (basic[:, 0].max() + 1) == 7


def test_init_writes_loadable_potential(tmp_path):
    mtp = init_mtp(16, ["Cu", "Pd"], 1.8, 5.2, radial_basis_size=8, seed=3)
    assert mtp.elements == ["Cu", "Pd"] and mtp.level == 16 and mtp.alpha_scalar_moments == 92
    write_mtp(mtp, tmp_path / "i.mtp")
    back = read_mtp(tmp_path / "i.mtp")
    np.testing.assert_array_equal(back.radial_coeffs, mtp.radial_coeffs)
    assert back.elements == ["Cu", "Pd"] and back.radial_coeffs.shape == (2, 2, 4, 8)
    again = init_mtp(16, ["Cu", "Pd"], 1.8, 5.2, seed=3)
    np.testing.assert_array_equal(again.radial_coeffs, mtp.radial_coeffs)
    assert not np.array_equal(init_mtp(16, ["Cu", "Pd"], 1.8, 5.2, seed=4).radial_coeffs, mtp.radial_coeffs)
    with pytest.raises(InputError, match="level"):
        init_mtp(30, ["Cu"], 1.0, 5.0)
    with pytest.raises(InputError, match="min_dist"):
        init_mtp(10, ["Cu"], 5.0, 4.0)


def test_generated_scheme_evaluates_in_kernel():
    """The kernel and the numpy reference agree on a generated level-16 scheme."""
    from ase import Atoms
    from csp.mtp.evaluate import calc_efs

    mtp = init_mtp(16, ["Cu"], 1.0, 4.5, seed=1)
    rng = np.random.default_rng(0)
    mtp.moment_coeffs = rng.normal(size=mtp.alpha_scalar_moments)
    env = rng.normal(0, 1.3, (7, 3))
    env = env[(np.linalg.norm(env, axis=1) < 4.5) & (np.linalg.norm(env, axis=1) > 0.5)]
    atoms = Atoms("Cu" * (len(env) + 1), positions=np.vstack([[0, 0, 0], env]))
    efs = calc_efs(mtp, atoms)

    def rad(mu, r):
        xi = (2 * r - mtp.min_dist - mtp.max_dist) / (mtp.max_dist - mtp.min_dist)
        T = np.polynomial.chebyshev.chebvander(xi, mtp.radial_basis_size - 1)
        return (T @ mtp.radial_coeffs[0, 0, mu]) * (r - mtp.max_dist) ** 2 * mtp.scaling

    scheme = (mtp.alpha_index_basic, mtp.alpha_index_times, mtp.alpha_moment_mapping, mtp.alpha_moments_count)
    v0 = scalars(scheme, env, rad) @ mtp.moment_coeffs
    assert abs(efs.energies[0] - v0) < 1e-9 * max(1, abs(v0))
