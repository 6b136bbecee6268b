//! Where plugins' sockets live: paths that cannot outgrow the Unix limit.

/// The longest path a Unix socket can have on Linux: `sun_path` holds 108 bytes,
/// the last of which is its NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest [`socket_tag`].
const MAX_TAG: usize = 16;

/// The name of a plugin's socket directory: the plugin's own name when it is short, else
/// its start and a hash of the whole. A socket path is then at most
/// [`plugin_socket_tail`] bytes longer than the host's directory, whatever the name and
/// however many generations have run.
pub fn socket_tag(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    // The daemon's config allows only such names; an embedder's may hold anything,
    // which must not become a path of its own (`..`, `/`).
    if !name.is_empty() && name.len() <= MAX_TAG && name.chars().all(plain) {
        return name.to_owned();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let start: String = name
        .chars()
        .filter(|c| plain(*c))
        .take(MAX_TAG - 9)
        .collect();
    format!("{start}~{hex}")
}

/// How much a plugin's socket path adds to the host's directory at most:
/// `/<tag>/<generation, up to 20 digits>.sock`.
pub const fn plugin_socket_tail() -> usize {
    1 + MAX_TAG + 1 + 20 + ".sock".len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_tags_are_short_plain_and_distinct() {
        assert_eq!(socket_tag("counter"), "counter");
        let long = "a".repeat(64);
        let longer = format!("{long}b");
        for name in [long.as_str(), longer.as_str(), "../../etc", "é", ""] {
            let tag = socket_tag(name);
            assert!(tag.len() <= MAX_TAG, "{tag}");
            assert!(
                !tag.contains('/') && tag != ".." && !tag.is_empty(),
                "{tag}"
            );
        }
        assert_ne!(socket_tag(&long), socket_tag(&longer));
    }
}
