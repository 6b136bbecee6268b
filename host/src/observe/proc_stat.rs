//! A process's CPU time and resident memory, from `/proc/<pid>/stat` alone: one small
//! file per plugin per sample. sysinfo, used before, also read `status` (the kernel's
//! costliest file in /proc) and `statm` for every pid, and with 256 plugins that was
//! nearly all of an idle daemon's CPU.

use std::io::Read;
use std::time::Duration;

/// What one read of a process's `stat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// User plus system time, all threads.
    pub cpu: Duration,
    pub rss_bytes: u64,
}

/// The kernel's units: clock ticks per second and bytes per page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Units {
    ticks_per_sec: u64,
    page_bytes: u64,
}

impl Units {
    pub(crate) fn of_this_system() -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let positive = |var, default: u64| {
            sysconf(var)
                .ok()
                .flatten()
                .and_then(|v| u64::try_from(v).ok())
                .filter(|&v| v > 0)
                .unwrap_or(default)
        };
        Self {
            ticks_per_sec: positive(SysconfVar::CLK_TCK, 100),
            page_bytes: positive(SysconfVar::PAGE_SIZE, 4096),
        }
    }
}

/// Reads `/proc/<pid>/stat`. The file is a few hundred bytes; more than the buffer is
/// not read (nothing the fields used here depend on comes that late).
pub(crate) fn usage(pid: u32, units: Units) -> std::io::Result<Usage> {
    let mut buf = [0u8; 1024];
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat"))?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    parse(&buf[..len], units).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat is not as expected"),
        )
    })
}

fn parse(stat: &[u8], units: Units) -> Option<Usage> {
    // The command name in parentheses may hold anything, ')' and spaces included: the
    // fields are counted from the last ')'. After it come field 3 (state) on; utime and
    // stime are fields 14 and 15, rss (in pages) field 24.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let mut field = |skip: usize| -> Option<u64> { fields.nth(skip)?.parse().ok() };
    let utime = field(11)?;
    let stime = field(0)?;
    let rss_pages = field(8)?;
    let ticks = utime.saturating_add(stime);
    Some(Usage {
        cpu: Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / units.ticks_per_sec.max(1)),
        rss_bytes: rss_pages.saturating_mul(units.page_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: Units = Units {
        ticks_per_sec: 100,
        page_bytes: 4096,
    };

    #[test]
    fn fields_are_counted_from_the_last_parenthesis() {
        // A name with spaces and parentheses, as a plugin may give itself.
        let stat = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 120 0 0 0 250 50 0 0 20 0 3 0 \
                     98765 123456789 777 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse(stat, UNITS),
            Some(Usage {
                cpu: Duration::from_secs(3),
                rss_bytes: 777 * 4096,
            })
        );
        assert_eq!(parse(b"4242 (cut", UNITS), None);
        assert_eq!(parse(b"4242 (x) S 1 2", UNITS), None);
    }

    #[test]
    fn this_process_reads_as_it_is() {
        let units = Units::of_this_system();
        let start = usage(std::process::id(), units).expect("own stat");
        // Spin until the kernel's own account (getrusage) says 300 ms of CPU were spent,
        // not for 300 ms of wall time: on a loaded machine the spin may get far less.
        use nix::sys::time::TimeValLike;
        let spent = || {
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map(|u| {
                Duration::from_micros(
                    u.user_time().num_microseconds().unsigned_abs()
                        + u.system_time().num_microseconds().unsigned_abs(),
                )
            })
        };
        let before = spent().expect("getrusage");
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        let mut spins = 0u64;
        while spent().expect("getrusage") < before + Duration::from_millis(300) {
            assert!(std::time::Instant::now() < give_up, "no CPU given in 60 s");
            for _ in 0..10_000 {
                spins = std::hint::black_box(spins + 1);
            }
        }
        let end = usage(std::process::id(), units).expect("own stat");
        assert!(
            end.cpu >= start.cpu + Duration::from_millis(150),
            "{start:?} → {end:?}"
        );
        assert!(end.rss_bytes > 1 << 20, "{end:?}");
        assert!(usage(u32::MAX, units).is_err(), "no such process");
    }
}
