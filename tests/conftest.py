"""Fixtures for the whole test suite."""

from pathlib import Path

import pytest

from csp_testdata import CONFORMANCE, DATA, MTP_CONFORMANCE  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def conformance() -> Path:
    """``tests/data/conformance``: MLIP conformance data vendored into the repository."""
    assert CONFORMANCE.is_dir(), f"missing test data {CONFORMANCE}"
    return CONFORMANCE
