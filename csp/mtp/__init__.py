"""Moment Tensor Potentials: data model, MLIP file formats, evaluation, ASE calculator."""

from csp.mtp.potential import MTP
from csp.mtp.io import (Configuration, atoms_to_cfg, cfg_to_atoms, iter_cfg, read_cfg, read_mtp,
                        write_cfg, write_mtp)
from csp.mtp.evaluate import EFS, Batch, BatchResult, calc_efs, calc_efs_batch
from csp.mtp.calculator import MTPCalculator

__all__ = ["MTP", "Configuration", "atoms_to_cfg", "cfg_to_atoms", "iter_cfg", "read_cfg",
           "read_mtp", "write_cfg", "write_mtp", "EFS", "Batch", "BatchResult", "calc_efs",
           "calc_efs_batch", "MTPCalculator"]
