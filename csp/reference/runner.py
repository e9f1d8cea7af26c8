"""Child-process entry of an isolated attempt: ``python -m csp.reference.runner ATTEMPT_DIR``.

Reads ``request.json`` and ``input.extxyz`` from the directory, runs the attempt serially
(no MPI: the parent removed the launcher's environment variables) and writes
``result.json`` (+ ``result.extxyz`` on success). The parent enforces the time limit by
killing this process group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ase.io

from csp.atomic import atomic_write
from csp.reference.core import backend_module
from csp.reference.operations import ReferenceRelaxSettings, run_attempt
from csp.validate import read


def main(directory: str) -> int:
    adir = Path(directory)
    request = json.loads((adir / "request.json").read_text())
    atoms = ase.io.read(adir / "input.extxyz", format="extxyz", parallel=False)
    settings = read(ReferenceRelaxSettings, request["relax"], "relax")
    module = backend_module(request["calculator"])
    params = request["parameters"]
    result = run_attempt(request["operation"], atoms, lambda: module.make_calculator(params, atoms, adir),
                         adir, settings, timeout=None)
    # atomic (csp.atomic): the parent reads result.json, complete, only after result.extxyz is complete
    if result.ok:
        with atomic_write(adir / "result.extxyz") as f:
            ase.io.write(f, result.atoms, format="extxyz", parallel=False)
    with atomic_write(adir / "result.json") as f:
        f.write(json.dumps({"ok": result.ok, "kind": result.kind, "reason": result.reason,
                            "converged": result.converged, "steps": result.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
