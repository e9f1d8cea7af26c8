"""Evolutionary variable-composition structure search (USPEX-style operators, hull fitness)."""

from csp.evolution.operators import (Heredity, LatticeMutation, Operator, Permutation, RandomFresh,
                                     SoftMutation, Transmutation, repair_counts)
from csp.evolution.population import Individual, niche_select, tournament
from csp.evolution.search import (DEFAULT_FRACTIONS, OPERATOR_NAMES, EvolutionResult, EvolutionSettings,
                                  GenerationStats, LineageSink, MemoryLineage, build_operators, evolve)
from csp.evolution.section import from_section
from csp.evolution.space import SearchSpace, too_close

__all__ = ["Heredity", "LatticeMutation", "Operator", "Permutation", "RandomFresh", "SoftMutation",
           "Transmutation", "repair_counts", "Individual", "niche_select", "tournament",
           "DEFAULT_FRACTIONS", "OPERATOR_NAMES", "EvolutionResult", "EvolutionSettings", "GenerationStats",
           "LineageSink", "MemoryLineage", "build_operators", "evolve", "SearchSpace", "too_close", "from_section"]
