"""Moment Tensor Potentials: data model, MLIP file formats, evaluation, ASE calculator.

Exports are resolved lazily (PEP 562): `import csp.mtp` or `from csp.mtp import training_cli`
imports no numba, ASE or kernels; `from csp.mtp import calc_efs_batch` imports only what that
name needs. This keeps `csp --help` and `csp mtp calc-efs` start-up short.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MTP": "csp.mtp.potential",
    "Configuration": "csp.mtp.io", "atoms_to_cfg": "csp.mtp.io", "cfg_to_atoms": "csp.mtp.io",
    "iter_cfg": "csp.mtp.io", "read_cfg": "csp.mtp.io", "read_mtp": "csp.mtp.io",
    "write_cfg": "csp.mtp.io", "write_mtp": "csp.mtp.io",
    "parse_mtp": "csp.mtp.io", "format_mtp": "csp.mtp.io", "read_almtp": "csp.mtp.io",
    "EFS": "csp.mtp.evaluate", "Batch": "csp.mtp.evaluate", "BatchResult": "csp.mtp.evaluate",
    "calc_efs": "csp.mtp.evaluate", "calc_efs_batch": "csp.mtp.evaluate",
    "MTPCalculator": "csp.mtp.calculator",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'csp.mtp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
