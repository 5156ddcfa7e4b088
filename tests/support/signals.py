"""Signal dispositions for the child processes of the stop and terminate tests.

A child inherits ignored signals, and the test process's are not what they seem: started in the
background (a shell's ``&``, ``nohup``), it has SIGINT ignored, and after any in-process Dagster
execution (``capture_interrupts`` maps SIGTERM to SIGINT's handler on the way out) SIGTERM is
ignored too. So each child gets its dispositions set here, before it executes: SIGTERM and SIGHUP
at their defaults, SIGINT as the test asks.
"""

from __future__ import annotations

import signal


def dispositions(sigint_ignored: bool):
    """A ``preexec_fn``: SIGINT ignored (as a platform started in the background has it) or default."""
    def preexec() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.SIG_DFL)
    return preexec
