"""Any ASE calculator given by import path, e.g. ``calculator: ase.calculators.lj.LennardJones``.

Settings: ``parameters`` (keyword arguments of the class). Backends that write files get
``directory=`` set to the attempt's working directory when their constructor accepts it.
Runs in-process unless ``isolation: process`` is set.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from csp.validate import fail, mapping

NAME = "custom"
KEYS = ("parameters",)
ISOLATION = "inline"
TIMEOUT: float | None = None
FALLBACKS: list[dict] = []


def import_class(path: str, where: str) -> type:
    """Import `package.module.Class`; InputError naming the key if impossible."""
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised by the module itself
        fail(where, f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}")
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls) or not issubclass(cls, BaseCalculator):
        fail(where, f"{path!r} is not an ASE calculator class")
    return cls


def validate(params: dict, where: str, class_path: str) -> dict:
    mapping(params, where, KEYS)
    cls = import_class(class_path, f"{where}.calculator")
    kwargs = mapping(params.get("parameters"), f"{where}.parameters")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        fail(f"{where}.parameters", f"{class_path} does not accept these arguments: {exc}")
    return {"class": class_path, "parameters": kwargs}


def make_calculator(params: dict, atoms: Atoms, directory: Path) -> BaseCalculator:
    cls = import_class(params["class"], "reference.calculator")
    kwargs = dict(params["parameters"])
    if "directory" in inspect.signature(cls).parameters and "directory" not in kwargs:
        kwargs["directory"] = str(directory)
    return cls(**kwargs)
