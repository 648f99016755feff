"""The one base class of errors a user can fix by changing their input.

The command line turns any :class:`UserError` into a one-paragraph message and exit code 2
(``--debug`` adds the traceback); every other exception is a bug and keeps its traceback.
Messages name the offending field, file or flag and say how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, files, run directory) that the user can correct; the message says how."""


class Interrupted(BaseException):
    """SIGTERM as an exception, like Ctrl-C's KeyboardInterrupt: ``finally`` blocks run on the way
    out (the run lock is released, the store closed), and no ``except Exception`` (a candidate's
    failure handling) records the interruption as a failed candidate."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
