//! `cpus`: the CPUs a plugin's process may run on (its scheduler affinity), as a config
//! writes them (`cpus = [2, "4-7"]`) and as the kernel takes them.
//!
//! Why a plugin would want one: to keep plugins off the cores a database beside them
//! needs, and, on a virtual machine whose idle vCPUs halt, to keep a plugin whose
//! runtime hands each call between threads (grpcio's poller and pool) on one vCPU, where
//! those hand-offs do not wake a halted one (docs/operations.md).

use std::fmt;

use nix::sched::CpuSet;
use serde::{Deserialize, Deserializer};

/// One past the highest CPU number a set can hold (the kernel's `cpu_set_t`).
pub const CPU_LIMIT: usize = CpuSet::count();

/// Where the kernel lists the CPUs that are online.
const ONLINE: &str = "/sys/devices/system/cpu/online";

/// A set of CPU numbers, sorted, each once, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The set of `cpus`, or `None` when it names none.
    pub fn new(cpus: impl IntoIterator<Item = usize>) -> Option<Self> {
        let mut cpus: Vec<usize> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        (!cpus.is_empty()).then_some(Self(cpus))
    }

    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// The kernel's form, or the first CPU it cannot hold.
    pub fn to_set(&self) -> Result<CpuSet, usize> {
        let mut set = CpuSet::new();
        for &cpu in &self.0 {
            set.set(cpu).map_err(|_| cpu)?;
        }
        Ok(set)
    }

    /// The CPUs online on this machine, as the kernel lists them; `None` where it does
    /// not say (then only the start of a plugin can tell).
    pub fn online() -> Option<Self> {
        let text = std::fs::read_to_string(ONLINE).ok()?;
        parse_cpu_list(text.trim()).ok()
    }

    /// Those of these CPUs this host can give a process: the ones within its cpuset (a
    /// container's, a systemd unit's `AllowedCPUs=`), whatever its own affinity. Asked
    /// of the kernel itself, by a thread of its own that asks for all of them and reads
    /// back what it got, as a plugin's start would; `None` where it cannot tell.
    pub fn usable(&self) -> Option<Self> {
        use nix::unistd::Pid;
        let every = self.to_set().ok()?;
        let got = std::thread::scope(|s| {
            // Built, not `s.spawn`: a thread the system will not make is "cannot tell".
            std::thread::Builder::new()
                .name("baton-cpus".into())
                .spawn_scoped(s, || {
                    // Pid 0 is the calling thread: only this short-lived thread moves.
                    nix::sched::sched_setaffinity(Pid::from_raw(0), &every).ok()?;
                    nix::sched::sched_getaffinity(Pid::from_raw(0)).ok()
                })
                .ok()?
                .join()
                .ok()
                .flatten()
        })?;
        Self::new((0..CPU_LIMIT).filter(|&cpu| got.is_set(cpu).unwrap_or(false)))
    }
}

/// CPUs gathered as bits, one per CPU the kernel can name: a list that repeats a range
/// thousands of times (a config is not trusted) costs no more memory than one.
struct Bits([u64; CPU_LIMIT.div_ceil(64)]);

impl Bits {
    fn new() -> Self {
        Self([0; CPU_LIMIT.div_ceil(64)])
    }

    /// Adds `range`, every CPU of which is below [`CPU_LIMIT`]: a word at a time, so
    /// that a config repeating a wide range costs little time too.
    fn add(&mut self, range: std::ops::RangeInclusive<usize>) {
        let (first, last) = (*range.start(), *range.end());
        if first > last {
            return;
        }
        for word in first / 64..=last / 64 {
            let low = if word == first / 64 { first % 64 } else { 0 };
            let high = if word == last / 64 { last % 64 } else { 63 };
            // Bits low..=high of the word.
            let mask = (u64::MAX >> (63 - high)) & (u64::MAX << low);
            self.0[word] |= mask;
        }
    }

    fn into_list(self) -> Option<CpuList> {
        CpuList::new((0..CPU_LIMIT).filter(|&c| self.0[c / 64] & (1 << (c % 64)) != 0))
    }
}

/// The kernel's list format, `0-3,8,10-11`, as the config's strings also allow.
fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut bits = Bits::new();
    add_cpu_list(&mut bits, text)?;
    bits.into_list().ok_or_else(|| "lists no CPU".to_string())
}

fn add_cpu_list(bits: &mut Bits, text: &str) -> Result<(), String> {
    for part in text.split(',') {
        bits.add(parse_part(part.trim())?);
    }
    Ok(())
}

/// One CPU (`"4"`) or an inclusive range (`"4-7"`).
fn parse_part(part: &str) -> Result<std::ops::RangeInclusive<usize>, String> {
    let number = |s: &str| {
        s.trim().parse::<usize>().map_err(|_| {
            format!("{part:?} is not a CPU number or a range of them (such as \"4-7\")")
        })
    };
    let (first, last) = match part.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(part)?;
            (n, n)
        }
    };
    if last < first {
        return Err(format!("{part:?} ends before it starts"));
    }
    // Checked here, not only when validating: a range such as "0-99999999999" would
    // otherwise be expanded before anything refused it.
    if last >= CPU_LIMIT {
        return Err(format!(
            "CPU {last} is past the highest this system can name ({})",
            CPU_LIMIT - 1
        ));
    }
    Ok(first..=last)
}

impl fmt::Display for CpuList {
    /// The kernel's list format, runs folded into ranges: `0-3,8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &cpu in &self.0 {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == cpu => *last = cpu,
                _ => runs.push((cpu, cpu)),
            }
        }
        for (i, (first, last)) in runs.into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

/// An entry of the config's list: a number, or a string in the kernel's list format.
enum Entry {
    Cpu(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CPU number or a string such as \"4-7\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Entry, E> {
                Ok(Entry::Cpu(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Entry, E> {
                u64::try_from(v)
                    .map(Entry::Cpu)
                    .map_err(|_| E::custom(format!("{v} is not a CPU number (they start at 0)")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Entry, E> {
                Ok(Entry::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let entries = Vec::<Entry>::deserialize(deserializer)?;
        let mut bits = Bits::new();
        for entry in entries {
            match entry {
                Entry::Cpu(cpu) if cpu >= CPU_LIMIT as u64 => {
                    return Err(D::Error::custom(format!(
                        "CPU {cpu} is past the highest this system can name ({})",
                        CPU_LIMIT - 1
                    )));
                }
                Entry::Cpu(cpu) => {
                    // Below CPU_LIMIT, so it fits.
                    let cpu = cpu as usize;
                    bits.add(cpu..=cpu);
                }
                Entry::Text(text) => add_cpu_list(&mut bits, &text).map_err(D::Error::custom)?,
            }
        }
        bits.into_list().ok_or_else(|| {
            D::Error::custom("lists no CPU (leave `cpus` out to let the plugin run on any)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        cpus: CpuList,
    }

    fn read(text: &str) -> Result<CpuList, String> {
        toml::from_str::<Holder>(text)
            .map(|h| h.cpus)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn numbers_and_ranges_make_one_sorted_set() {
        let cpus = read(r#"cpus = [7, "0-2", 1, "4,5"]"#).expect("a list");
        assert_eq!(cpus.cpus(), [0, 1, 2, 4, 5, 7]);
        assert_eq!(cpus.to_string(), "0-2,4-5,7");
        let set = cpus.to_set().expect("a set");
        assert!(set.is_set(4).expect("in range") && !set.is_set(3).expect("in range"));
        assert_eq!(read("cpus = [3]").expect("a list").to_string(), "3");
    }

    #[test]
    fn a_bad_list_is_refused_saying_why() {
        for (text, words) in [
            ("cpus = []", "lists no CPU"),
            (r#"cpus = ["5-2"]"#, "ends before it starts"),
            (r#"cpus = ["x"]"#, "is not a CPU number"),
            (r#"cpus = ["1-"]"#, "is not a CPU number"),
            ("cpus = [4096]", "past the highest"),
            (r#"cpus = ["0-99999999999"]"#, "past the highest"),
            ("cpus = [-1]", "not a CPU number (they start at 0)"),
            ("cpus = [1.5]", "a CPU number or a string"),
            (r#"cpus = ["", "1"]"#, "is not a CPU number"),
        ] {
            let e = read(text).expect_err("refused");
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_without_panic(text in ".{0,24}") {
            let _ = parse_cpu_list(&text);
        }

        #[test]
        fn a_range_is_added_as_its_cpus_one_by_one(
            first in 0..CPU_LIMIT, len in 0..CPU_LIMIT
        ) {
            let last = (first + len).min(CPU_LIMIT - 1);
            let mut words = Bits::new();
            words.add(first..=last);
            let mut one_by_one = Bits::new();
            for cpu in first..=last {
                one_by_one.0[cpu / 64] |= 1 << (cpu % 64);
            }
            proptest::prop_assert_eq!(words.0, one_by_one.0);
        }

        #[test]
        fn a_set_written_out_reads_back_the_same(
            cpus in proptest::collection::vec(0..CPU_LIMIT, 1..40)
        ) {
            let set = CpuList::new(cpus).expect("not empty");
            let again = parse_cpu_list(&set.to_string()).expect("its own format");
            proptest::prop_assert_eq!(again, set);
        }
    }

    #[test]
    fn a_list_that_repeats_a_range_costs_no_more_memory_than_the_range() {
        use nix::sys::resource::{UsageWho, getrusage};
        let peak_kib = || getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| u.max_rss());
        // 100 000 entries, about 1 MiB of config: read one CPU at a time into a list,
        // they would take 800 MB.
        let text = format!("cpus = [{}]", vec![r#""0-1023""#; 100_000].join(", "));
        let before = peak_kib();
        let cpus = read(&text).expect("a list");
        let grown_mib = (peak_kib() - before) / 1024;
        assert_eq!(cpus.cpus().len(), CPU_LIMIT);
        assert!(grown_mib < 200, "reading it took {grown_mib} MiB more");
    }

    #[test]
    fn the_cpus_a_host_can_give_do_not_depend_on_its_own_affinity() {
        use nix::unistd::Pid;
        let online = CpuList::online().expect("this machine lists its CPUs");
        let usable = online.usable().expect("the kernel answers");
        assert!(
            usable.cpus().iter().all(|c| online.cpus().contains(c)),
            "{usable} not within {online}"
        );
        // From a thread held to one CPU (as under `taskset`), the same answer.
        let first = usable.cpus()[0];
        let asked = online.clone();
        let narrowed = std::thread::spawn(move || {
            let mut one = CpuSet::new();
            one.set(first).expect("in range");
            nix::sched::sched_setaffinity(Pid::from_raw(0), &one).expect("narrowed");
            asked.usable()
        })
        .join()
        .expect("joined");
        assert_eq!(narrowed.as_ref(), Some(&usable));
    }

    #[test]
    fn the_kernels_online_list_is_read() {
        let online = CpuList::online().expect("this machine lists its CPUs");
        // The CPU this test runs on is online.
        let here = nix::sched::sched_getcpu().expect("the CPU running this");
        assert!(online.cpus().contains(&here), "{online} lacks {here}");
    }
}
