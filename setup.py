"""Package discovery only (everything else is in pyproject.toml).

The prototype library lives at the top level of the source tree (``prototypes/``) and is
installed as the package data ``csp/_prototypes/`` (read by ``csp.structures.prototypes``).
pyproject's ``packages.find`` cannot add a package mapped from another directory, hence
this file: every ``csp*`` package is still found automatically (as ``packages.find`` did,
directories without ``__init__.py`` included).
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["csp", "csp.*"], exclude=["*__pycache__*"])
    + ["csp._prototypes"],
    package_dir={"csp._prototypes": "prototypes"},
)
