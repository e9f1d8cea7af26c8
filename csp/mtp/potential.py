"""The Moment Tensor Potential as plain data (MLIP's `.mtp` model, version 1.1.0).

Site energy of atom i (type t_i):
    V_i = species_coeffs[t_i] + sum_k moment_coeffs[k] * m_i[alpha_moment_mapping[k]]
with basic moments m[n] = sum_j f_mu(r_ij) (x/r)^a (y/r)^b (z/r)^c for alpha_index_basic[n] =
(mu, a, b, c), contractions m[k] += w * m[i] * m[j] applied in file order, and radial functions
f_mu(r) = sum_beta radial_coeffs[t_i, t_j, mu, beta] * scaling * T_beta(xi) * (r - max_dist)^2.
Energies in eV, distances in Å.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MTP:
    """A Moment Tensor Potential; arrays are numpy, coefficients in eV, distances in Å."""

    species_count: int
    min_dist: float
    max_dist: float
    radial_basis_size: int
    radial_funcs_count: int
    radial_coeffs: np.ndarray  # (S, S, radial_funcs_count, radial_basis_size); [a, b]: centre a, neighbour b
    alpha_moments_count: int
    alpha_index_basic: np.ndarray  # (n_basic, 4) int64: mu, a, b, c
    alpha_index_times: np.ndarray  # (n_times, 4) int64: i, j, w, k
    alpha_moment_mapping: np.ndarray  # (n_scalar,) int64
    species_coeffs: np.ndarray  # (S,) eV
    moment_coeffs: np.ndarray  # (n_scalar,) eV
    scaling: float = 1.0
    potential_name: str = "MTP"
    potential_tag: str = ""
    version: str = "1.1.0"
    radial_basis_type: str = "RBChebyshev"
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        S, R, B = int(self.species_count), int(self.radial_funcs_count), int(self.radial_basis_size)
        self.species_count, self.radial_funcs_count, self.radial_basis_size = S, R, B
        self.alpha_moments_count = int(self.alpha_moments_count)
        self.min_dist, self.max_dist, self.scaling = float(self.min_dist), float(self.max_dist), float(self.scaling)
        self.radial_coeffs = np.ascontiguousarray(self.radial_coeffs, dtype=np.float64).reshape(S, S, R, B)
        self.alpha_index_basic = np.ascontiguousarray(self.alpha_index_basic, dtype=np.int64).reshape(-1, 4)
        self.alpha_index_times = np.ascontiguousarray(self.alpha_index_times, dtype=np.int64).reshape(-1, 4)
        self.alpha_moment_mapping = np.ascontiguousarray(self.alpha_moment_mapping, dtype=np.int64).ravel()
        self.species_coeffs = np.ascontiguousarray(self.species_coeffs, dtype=np.float64).ravel()
        self.moment_coeffs = np.ascontiguousarray(self.moment_coeffs, dtype=np.float64).ravel()
        self.metadata = {str(k): str(v) for k, v in dict(self.metadata).items()}

    # ------------------------------------------------------------------ derived sizes
    @property
    def alpha_scalar_moments(self) -> int:
        """Number of scalar basis functions (= len(moment_coeffs))."""
        return int(len(self.alpha_moment_mapping))

    @property
    def n_params(self) -> int:
        """Length of the parameter vector (radial, species, moment coefficients)."""
        return int(self.radial_coeffs.size + self.species_coeffs.size + self.moment_coeffs.size)

    @property
    def elements(self) -> list[str] | None:
        """Chemical symbols of types 0..S-1 from metadata `csp_elements`, or None."""
        text = self.metadata.get("csp_elements", "").strip()
        if not text:
            return None
        return [s.strip() for s in text.replace(",", " ").split() if s.strip()]

    @property
    def level(self) -> int | None:
        """Level of the basis from metadata `csp_level`, or None if unknown."""
        text = self.metadata.get("csp_level", "").strip()
        return int(text) if text else None

    # ------------------------------------------------------------------ parameters
    def get_parameters(self) -> np.ndarray:
        """1-D vector [radial_coeffs.ravel() (C order), species_coeffs, moment_coeffs]."""
        return np.concatenate([self.radial_coeffs.ravel(), self.species_coeffs, self.moment_coeffs])

    def with_parameters(self, theta: np.ndarray) -> "MTP":
        """A copy of this potential with the parameter vector `theta` (order of get_parameters)."""
        theta = np.asarray(theta, dtype=np.float64).ravel()
        if theta.size != self.n_params:
            raise ValueError(f"parameter vector has {theta.size} entries, potential needs {self.n_params}")
        new = self.copy()
        nr, ns = self.radial_coeffs.size, self.species_coeffs.size
        new.radial_coeffs = theta[:nr].reshape(self.radial_coeffs.shape).copy()
        new.species_coeffs = theta[nr:nr + ns].copy()
        new.moment_coeffs = theta[nr + ns:].copy()
        return new

    def copy(self) -> "MTP":
        """A deep copy."""
        return _copy.deepcopy(self)
