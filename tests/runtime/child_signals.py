"""Child processes that tests interrupt get SIGINT as a terminal would deliver it.

A test run started in the background (``nohup pytest &``, some CI runners) inherits SIGINT as ignored, and a Python
child that starts with SIGINT ignored never turns it into KeyboardInterrupt; restoring the default before exec makes
the child install its Ctrl-C handler as it does under a terminal.
"""

import signal


def sigint_as_a_terminal_gives_it() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: SIGINT back to its default disposition in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
