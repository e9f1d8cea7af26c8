"""One module per `csp` sub-command.

Each module defines `NAME` (the verb), `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. `csp.cli` discovers every module in this package, so adding a verb means
adding a module here and nothing else.
"""
