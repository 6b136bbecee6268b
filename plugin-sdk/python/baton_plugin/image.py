"""One snapshot as a plugin hands it to the SDK: a whole state or a delta, with the
cursors that chain deltas together (docs/incremental-state.md)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class StateImage:
    """A snapshot from Plugin.snapshot_since."""

    #: The state (or the delta) in the plugin's own format.
    data: bytes
    #: True if `data` holds only the changes since `base_cursor`.
    delta: bool = False
    #: For a delta: the cursor it follows, the `since` it was asked for.
    base_cursor: bytes = b""
    #: The cursor this image is consistent as of (at most 256 bytes); passed back as
    #: `since` for the changes after it. Empty: no cursor, so no delta can follow.
    cursor: bytes = b""
