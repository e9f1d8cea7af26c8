"""Errors that csp reports to the user.

`InputError` is the user's mistake (a bad file, key, value or structure): the CLI prints its
message as one line on stderr and exits with code 2, never with a traceback. Its message must
name the file, key or structure at fault. Anything else is an internal error (exit code 1).
"""


class InputError(Exception):
    """A problem with user input; the message is one line naming what is wrong and where."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
