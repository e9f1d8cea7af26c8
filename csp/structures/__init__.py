"""Candidate structures: derivative-structure enumeration, prototypes, random structures, dedup.

Sub-modules: `volume` (atomic volumes, Vegard's rule), `enumerate` (Hart–Forcade derivative
structures), `dedup` (invariant-key bucketing + StructureMatcher), and the prototype / random
generators.
"""
