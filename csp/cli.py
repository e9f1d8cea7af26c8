"""The `csp` command: discovers sub-commands in `csp.commands` and maps errors to exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import Sequence

import csp
import csp.commands
from csp.errors import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InputError(f"{self.prog}: {message}")


def _command_modules():
    for info in sorted(pkgutil.iter_modules(csp.commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"csp.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="csp", description=csp.__doc__)
    parser.add_argument("--version", action="version", version=f"csp {csp.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# csp parallelises over processes (MPI ranks, task-farm workers); threaded BLAS inside every
# process only oversubscribes the cores (a 3x3 LAPACK call in ASE's cell filter took ms, not µs,
# with OpenBLAS threads spinning). A value the user set is kept.
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `csp` console script; returns the process exit code."""
    for name in SINGLE_THREAD_ENV:   # before the sub-commands import numpy
        os.environ.setdefault(name, "1")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return EXIT_INPUT
        return int(args._run(args) or EXIT_OK)
    except InputError as exc:
        print(f"csp: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"csp: error: cannot open '{name}': {exc.strerror}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # a full, read-only or failing disk is one line; anything else a bug
        from csp.atomic import storage_error_message

        message = storage_error_message(exc, getattr(locals().get("args"), "run_dir", None))
        if message is None:
            raise
        print(f"csp: error: {message}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("csp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
