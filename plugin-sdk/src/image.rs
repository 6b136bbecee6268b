//! One snapshot as a plugin hands it to the SDK: a whole state or a delta, with the
//! cursors that chain deltas together.

use bytes::Bytes;

/// A snapshot from [`crate::Plugin::snapshot_since`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateImage {
    /// The state (or the delta) in the plugin's own format.
    pub data: Bytes,
    /// True if `data` holds only the changes since `base_cursor`.
    pub delta: bool,
    /// For a delta: the cursor it follows, the `since` it was asked for.
    pub base_cursor: Bytes,
    /// The cursor this image is consistent as of; pass it back as `since` for the
    /// changes after it. Empty: the plugin gives no cursor, so no delta can follow.
    pub cursor: Bytes,
}

impl StateImage {
    /// A whole state without a cursor: what a plugin without deltas snapshots.
    pub fn full(data: Bytes) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }
}
