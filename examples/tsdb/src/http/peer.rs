//! Who is on the other end of a loopback connection: a write a trigger's plugin makes
//! over HTTP during its call must not wait for triggers (`run_async = false`), or a
//! plugin writing into a table its own trigger watches would wait for itself.

use std::net::{IpAddr, SocketAddr};

/// The two ends of a request's connection, put in its extensions by `connection`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub remote: SocketAddr,
    /// tsdb's address the client reached.
    pub local: SocketAddr,
}

impl Peer {
    /// Whether the client's end of the connection is held by one of `pids` (read from
    /// the kernel's socket table and those processes' descriptors). False for a remote
    /// client, and whenever that cannot be read.
    pub fn held_by_any(&self, pids: &[u32]) -> bool {
        if pids.is_empty() || !self.remote.ip().is_loopback() {
            return false;
        }
        let Some(inode) = socket_inode(self.remote, self.local) else {
            return false;
        };
        let wanted = format!("socket:[{inode}]");
        pids.iter().any(|pid| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == &*wanted)
            })
        })
    }
}

/// The inode of the TCP socket whose own address is `from` and whose peer is `to`.
fn socket_inode(from: SocketAddr, to: SocketAddr) -> Option<u64> {
    let (table, from, to) = match (from.ip(), to.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ("/proc/net/tcp", kernel_form(from), kernel_form(to)),
        _ => ("/proc/net/tcp6", kernel_form6(from), kernel_form6(to)),
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.get(1) == Some(&from.as_str()) && columns.get(2) == Some(&to.as_str()) {
            columns.get(9)?.parse().ok()
        } else {
            None
        }
    })
}

/// An address as the kernel prints it: each 32-bit word in host order, in hex.
fn words(octets: &[u8]) -> String {
    octets
        .chunks(4)
        .map(|w| {
            let word = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            format!("{word:08X}")
        })
        .collect()
}

fn kernel_form(addr: SocketAddr) -> String {
    let octets = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    format!("{}:{:04X}", words(&octets), addr.port())
}

/// In `/proc/net/tcp6` an IPv4 address is shown mapped (`::ffff:a.b.c.d`).
fn kernel_form6(addr: SocketAddr) -> String {
    let octets = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    format!("{}:{:04X}", words(&octets), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_the_kernels_form() {
        if cfg!(target_endian = "little") {
            let v4: SocketAddr = "127.0.0.1:8181".parse().expect("an address");
            assert_eq!(kernel_form(v4), "0100007F:1FF5");
            let v6: SocketAddr = "[::1]:80".parse().expect("an address");
            assert_eq!(kernel_form6(v6), "00000000000000000000000001000000:0050");
        }
    }

    #[test]
    fn this_process_holds_its_own_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (_server, remote) = listener.accept().expect("accept");
        let peer = Peer {
            remote,
            local: listener.local_addr().expect("addr"),
        };
        assert!(peer.held_by_any(&[std::process::id()]));
        assert!(!peer.held_by_any(&[]));
        drop(client);
    }
}
