"""Paths of the data files the tests read; everything lives in ``tests/data/`` (no test reads
outside the repository).

Import the constants from here (``from csp_testdata import CONFORMANCE``), not from
``conftest``: several ``conftest.py`` files share that module name (``tests/evolution/`` has
one), so ``from conftest import ...`` picks whichever was imported last. ``tests/`` is on
``sys.path`` through ``tests/conftest.py`` and ``[tool.pytest.ini_options] pythonpath``.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
CONFORMANCE = DATA / "conformance"          # README.md, mtp/, mlip-train/, mlip-grade/
MTP_CONFORMANCE = CONFORMANCE / "mtp"       # MLIP-2 potentials + calc-efs outputs (motep, MIT)
