//! The launch handshake: the token a plugin is started with, and the one line it
//! prints on stdout once it listens.

use std::path::Path;

use baton_proto::PROTOCOL_VERSION;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::StartError;

/// Longest handshake line accepted; anything longer is garbage.
const MAX_HANDSHAKE_LINE: u64 = 4096;

/// 32 bytes from the OS CSPRNG, hex-encoded. Without OS randomness no launch is safe,
/// so that is a failed start rather than a weak token.
pub fn new_token() -> Result<String, StartError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        StartError::Handshake(format!(
            "cannot make a launch token: the OS random generator failed: {e}"
        ))
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) async fn read_handshake_line<R: AsyncRead + Unpin>(
    stdout: &mut BufReader<R>,
) -> Result<String, StartError> {
    let mut buf = Vec::new();
    let n = (&mut *stdout)
        .take(MAX_HANDSHAKE_LINE)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| StartError::Handshake(format!("cannot read stdout: {e}")))?;
    if n == 0 {
        return Err(StartError::Handshake(format!(
            "closed stdout without printing the handshake line (expected `baton|{PROTOCOL_VERSION}|unix|<socket>`)"
        )));
    }
    // A first line without a newline is judged as it came (stdout closed mid-line),
    // unless it hit the length limit.
    if buf.last() != Some(&b'\n') && n as u64 >= MAX_HANDSHAKE_LINE {
        return Err(StartError::Handshake(format!(
            "printed a first stdout line longer than {MAX_HANDSHAKE_LINE} bytes, expected `baton|{PROTOCOL_VERSION}|unix|<socket>`"
        )));
    }
    Ok(String::from_utf8_lossy(&buf)
        .trim_end_matches(['\n', '\r'])
        .to_owned())
}

/// Checks `baton|<version>|unix|<path>`; the message says what was expected and what came.
pub fn check_handshake(line: &str, socket: &Path) -> Result<(), StartError> {
    let expected = format!("baton|{PROTOCOL_VERSION}|unix|{}", socket.display());
    let shown: String = line.chars().take(200).collect();
    let shown = crate::io::printable::printable(&shown);
    let fail = |why: String| Err(StartError::Handshake(why));
    let fields: Vec<&str> = line.splitn(4, '|').collect();
    match fields.as_slice() {
        ["baton", version, network, path] => {
            if *version != PROTOCOL_VERSION.to_string() {
                return fail(format!(
                    "speaks protocol version {version:?}, this host speaks {PROTOCOL_VERSION} (handshake line `{shown}`)"
                ));
            }
            if *network != "unix" {
                return fail(format!(
                    "offers network {network:?}, expected \"unix\" (handshake line `{shown}`)"
                ));
            }
            if Path::new(path) != socket {
                return fail(format!(
                    "bound {path:?}, but was asked to bind {:?} (BATON_PLUGIN_SOCKET)",
                    socket.display()
                ));
            }
            Ok(())
        }
        _ => fail(format!(
            "printed `{shown}` on stdout where the handshake line `{expected}` was expected"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_lines_are_judged_with_what_was_expected() {
        let sock = Path::new("/tmp/x/counter.1.sock");
        assert!(check_handshake("baton|1|unix|/tmp/x/counter.1.sock", sock).is_ok());
        let e = |l: &str| {
            check_handshake(l, sock)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e("hello world").contains("printed `hello world`"));
        assert!(e("hello world").contains("baton|1|unix|/tmp/x/counter.1.sock"));
        assert!(e("baton|2|unix|/tmp/x/counter.1.sock").contains("protocol version \"2\""));
        assert!(e("baton|1|tcp|127.0.0.1:1").contains("network \"tcp\""));
        assert!(e("baton|1|unix|/elsewhere").contains("was asked to bind"));
        assert!(e("").contains("where the handshake line"));
    }
}
