"""`candidates: evolution:` section parsing: defaults, values, one-line errors naming the key."""

import pytest

from csp.errors import InputError
from csp.evolution import DEFAULT_FRACTIONS
from csp.evolution.section import from_section

EL = ["Cu", "Au"]


def test_defaults_and_values():
    space, settings, seed = from_section(None, EL, seed=4)
    assert (space.max_atoms, space.variable, seed) == (16, True, 4)
    assert settings.population_size == 20 and settings.n_offspring == 20 and settings.n_elite == 10
    assert dict(settings.fractions) == DEFAULT_FRACTIONS
    space, settings, seed = from_section({"population_size": 50, "generations": 7, "max_atoms": 12, "seed": 9,
                                          "composition": [3, 1], "fractions": {"heredity": 1, "lattice": 1}},
                                         EL)
    assert (space.composition, space.max_atoms, seed) == ((3, 1), 12, 9)
    assert (settings.population_size, settings.generations) == (50, 7)
    space, _, _ = from_section({"fraction_range": {"Au": [0.1, 0.5]}}, EL)
    assert space.allowed((3, 1)) and not space.allowed((4, 0))


@pytest.mark.parametrize("section, key", [
    ({"population_size": 1}, "candidates.evolution.population_size"),
    ({"population_size": "many"}, "candidates.evolution.population_size"),
    ({"generations": -1}, "candidates.evolution.generations"),
    ({"max_atoms": 0}, "candidates.evolution.max_atoms"),
    ({"min_atoms": 20, "max_atoms": 8}, "candidates.evolution.min_atoms"),
    ({"composition": [1]}, "candidates.evolution.composition"),
    ({"composition": [0, 0]}, "candidates.evolution.composition"),
    ({"fraction_range": {"Pd": [0, 1]}}, "candidates.evolution.fraction_range"),
    ({"fraction_range": {"Au": [0.6, 0.2]}}, "candidates.evolution.fraction_range.Au"),
    ({"fractions": {"crossover": 1.0}}, "candidates.evolution.fractions"),
    ({"fractions": {"heredity": -1.0}}, "candidates.evolution.fractions.heredity"),
    ({"fractions": {"heredity": 0.0}}, "candidates.evolution.fractions"),
    ({"volume_range": [2.0, 1.0]}, "candidates.evolution.volume_range"),
    ({"fittest_fraction": 1.5}, "candidates.evolution.fittest_fraction"),
    ({"popsize": 3}, "candidates.evolution"),
    ([1, 2], "candidates.evolution"),
])
def test_bad_input_is_one_line_naming_the_key(section, key):
    with pytest.raises(InputError) as err:
        from_section(section, EL)
    msg = str(err.value)
    assert msg.startswith(f"key '{key}") and "\n" not in msg
