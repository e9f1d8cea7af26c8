"""The screening window on a hand-computed binary hull."""

import pytest

from csp.errors import InputError
from csp.campaign.screen import ScreenEntry, energies_above_hull, within_window


def entries():
    # A-B binary; elemental references at 0 and -1 eV/atom; AB at -1.0 eV/atom is on the hull
    # (line from A at 0 to B at -1 gives -0.5 at x=0.5, so AB lies 0.5 below it).
    return [
        ScreenEntry(1, {"Cu": 1}, 0.0),
        ScreenEntry(2, {"Cu": 2}, 0.05),             # second Cu polymorph, 50 meV above
        ScreenEntry(3, {"Pd": 1}, -1.0),
        ScreenEntry(4, {"Cu": 1, "Pd": 1}, -1.0),    # hull vertex
        ScreenEntry(5, {"Cu": 2, "Pd": 2}, -0.99),   # same composition, 10 meV above
        ScreenEntry(6, {"Cu": 3, "Pd": 1}, -0.45),   # hull at x=0.25: halfway 0 -> -1.0 = -0.5; 50 meV above
        ScreenEntry(7, {"Cu": 1, "Pd": 3}, -1.0),    # hull at x=0.75 between AB(-1) and B(-1): -1.0; on hull
    ]


def test_energies_above_hull_by_hand():
    d = energies_above_hull(entries(), ["Cu", "Pd"])
    expected = {1: 0.0, 2: 0.05, 3: 0.0, 4: 0.0, 5: 0.01, 6: 0.05, 7: 0.0}
    assert d == pytest.approx(expected, abs=1e-9)


def test_window_keeps_exactly_those_within():
    kept, _ = within_window(entries(), ["Cu", "Pd"], 0.02)
    assert kept == [1, 3, 4, 5, 7]
    kept, _ = within_window(entries(), ["Cu", "Pd"], 0.0)
    assert kept == [1, 3, 4, 7]
    kept, _ = within_window(entries(), ["Cu", "Pd"], 0.06)
    assert kept == [1, 2, 3, 4, 5, 6, 7]


def test_missing_element_is_reported():
    with pytest.raises(InputError, match="pure Pd"):
        energies_above_hull([ScreenEntry(1, {"Cu": 1}, 0.0), ScreenEntry(2, {"Cu": 1, "Pd": 1}, -0.2)],
                            ["Cu", "Pd"])
