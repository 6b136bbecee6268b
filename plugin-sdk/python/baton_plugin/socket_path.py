"""The plugin's socket file, under the host's rule: a path is taken over only when it holds
a stale socket, and removed at the end only while it still holds the one bound here."""

import errno
import os
import socket
import stat
from typing import Optional, Tuple


class SocketPathError(Exception):
    """Something at the socket path that is not a stale socket; nothing was deleted."""


def claim(path: str) -> None:
    """Makes `path` free to bind: nothing is there, or a socket nobody answers on (left
    by a plugin that was killed), which is removed. Anything else raises SocketPathError."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise SocketPathError(f"cannot check the plugin socket path {path}: {e}") from e
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketPathError(
            f"the plugin socket path {path} is {_describe(info.st_mode)}, not a socket; only a "
            "stale socket is ever replaced, so nothing was deleted: the host must be given a "
            "path that is free"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # The socket file outlived its listener.
        remove_if_ours(path, identity(info))
        return
    except OSError as e:
        # Not ours to judge (permission denied, ...): leave it alone.
        raise SocketPathError(
            f"cannot tell whether the socket at the plugin socket path {path} is stale: {e}"
        ) from e
    finally:
        probe.close()
    raise SocketPathError(
        f"the plugin socket path {path} is a socket another process is listening on; "
        "it was left alone"
    )


def identity(info: os.stat_result) -> Tuple[int, int]:
    return (info.st_dev, info.st_ino)


def bound(path: str) -> Optional[Tuple[int, int]]:
    """The identity of the socket file just bound at `path`."""
    try:
        return identity(os.lstat(path))
    except OSError:
        return None


def remove_if_ours(path: str, ours: Optional[Tuple[int, int]]) -> None:
    """Removes the socket file at `path` if it is still the one `ours` names: a later
    plugin may have bound its own there since."""
    try:
        info = os.lstat(path)
        if ours is not None and stat.S_ISSOCK(info.st_mode) and identity(info) == ours:
            os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def _describe(mode: int) -> str:
    for test, kind in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "a file of an unknown kind"
