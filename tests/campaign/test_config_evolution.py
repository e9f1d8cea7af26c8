"""The `candidates: evolution:` section of a search file: accepted settings, and one-line errors
(exit 2, key named, nothing written) through the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from csp.cli import main
from csp.config import load_search

HEAD = "elements: [Cu, Au]\nseed: 4\ncandidates:\n  enumerate: false\n  prototypes: false\n  random: {count: 4}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def test_evolution_section_is_parsed(tmp_path):
    s = load_search(write(tmp_path, HEAD + "  evolution:\n    population_size: 8\n    generations: 3\n"
                          "    stall_generations: 2\n    max_atoms: 6\n    fraction_range: {Au: [0.0, 0.5]}\n"
                          "    fractions: {heredity: 1, lattice: 1}\n"))
    evo = s.candidates.evolution
    assert evo.settings.population_size == 8 and evo.settings.generations == 3
    assert evo.settings.stall_generations == 2 and evo.space.max_atoms == 6
    assert evo.space.fraction_range == {"Au": (0.0, 0.5)}
    assert evo.seed == 4                     # the search's seed unless given
    assert set(evo.settings.fractions) == {"heredity", "lattice"}


def test_evolution_true_means_defaults_and_absent_means_off(tmp_path):
    assert load_search(write(tmp_path, HEAD + "  evolution: true\n")).candidates.evolution.settings.population_size == 20
    assert load_search(write(tmp_path, HEAD)).candidates.evolution is None
    assert load_search(write(tmp_path, HEAD + "  evolution: false\n")).candidates.evolution is None


BAD = {
    "population": ("  evolution: {population_size: 1}\n", "key 'candidates.evolution.population_size'"),
    "unknown_key": ("  evolution: {generation: 3}\n", "key 'candidates.evolution.generation': unknown key "
                                                       "(did you mean 'generations'?)"),
    "operator": ("  evolution: {fractions: {crossover: 1}}\n", "key 'candidates.evolution.fractions.crossover'"),
    "no_share": ("  evolution: {fractions: {heredity: 0}}\n", "key 'candidates.evolution.fractions'"),
    "element": ("  evolution: {fraction_range: {Pd: [0, 1]}}\n", "key 'candidates.evolution.fraction_range'"),
    "composition": ("  evolution: {composition: [1]}\n", "key 'candidates.evolution.composition'"),
    "not_mapping": ("  evolution: 3\n", "key 'candidates.evolution'"),
    "volume": ("  evolution: {volume_range: [2.0, 1.0]}\n", "key 'candidates.evolution.volume_range'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_evolution_section_is_one_line_exit_2(case, tmp_path, capsys, monkeypatch):
    text, expected = BAD[case]
    path = write(tmp_path, HEAD + text)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert main(["run", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"csp: error: {path}: ") and expected in lines[0], lines[0]
    assert sorted(os.listdir(tmp_path)) == before


def test_evolution_needs_a_seed_source(tmp_path, capsys):
    path = write(tmp_path, "elements: [Cu, Au]\ncandidates:\n  enumerate: false\n  prototypes: false\n"
                           "  evolution: {population_size: 4}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "key 'candidates'" in err and "evolution needs them as seeds" in err
