"""stdout belongs to the handshake line: anything written there before it breaks the
plugin's start, and anything after it passes for protocol output (`baton check` fails
on it, the host logs it as stray). So the SDK keeps the real stdout for the handshake
and points file descriptor 1 at stderr, which the host captures as the plugin's log:
print(), writes to fd 1 from C code, and child processes (which inherit fd 1) all land
there."""

import os
import sys
import threading
from typing import Optional, TextIO

_lock = threading.Lock()
_handshake: Optional[TextIO] = None


def redirect_stdout() -> None:
    """Sends everything written to stdout from now on to stderr, keeping the real
    stdout for the handshake line. serve() does it first thing; call it earlier, at the
    top of your main module, if code that runs before serve() may print. Calling it
    again does nothing. Raises OSError when stdout or stderr cannot be duplicated."""
    global _handshake
    with _lock:
        if _handshake is not None:
            return
        # A duplicate of the real stdout, not inherited by child processes (os.dup's
        # default), so a child can never write between handshake bytes.
        fd = os.dup(1)
        try:
            os.dup2(2, 1)
        except OSError:
            os.close(fd)
            raise
        _handshake = os.fdopen(fd, "w", encoding="utf-8", closefd=True)
        # What print() buffered so far (all of it, when stdout is a pipe and nobody
        # flushed) now goes out through fd 1, which is stderr.
        try:
            sys.stdout.flush()
        except (AttributeError, OSError, ValueError):
            pass
        # sys.stdout still writes to fd 1, now stderr, but with the buffering of a
        # pipe: sys.stderr's line buffering keeps prints in order with the logs.
        sys.stdout = sys.stderr


def write_handshake(line: str) -> None:
    """Writes the handshake line on the real stdout (sys.stdout when stdout was not
    redirected, as in a program that calls run() itself). Raises OSError."""
    out = _handshake if _handshake is not None else sys.stdout
    out.write(line + "\n")
    out.flush()
