//! Where the threads run (README "Configuration", tuning.md "Shards and
//! cores"): shard i on the i-th CPU the process may use, and the
//! background threads (accounting writer, usage, loader, pools, cluster,
//! jobs, control, radius_logs workers) on the CPUs no shard has, when
//! there are any (`server.background_cpus = "auto"`), on a list the
//! operator names, or wherever the kernel puts them (`"shared"`).
//!
//! Written by hand over `sched_getaffinity`/`sched_setaffinity`: the
//! affinity crates wrap the same two calls, and the plan itself is a few
//! lines of set arithmetic (unit-tested below).

use std::fmt;

use serde::Deserialize;

/// `server.background_cpus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackgroundCpus {
    /// The CPUs the shards do not use, if any; else shared.
    #[default]
    Auto,
    /// No pinning: the kernel schedules them among the shards.
    Shared,
    /// These CPUs (e.g. "2-3,6").
    List(Vec<usize>),
}

impl BackgroundCpus {
    pub fn parse(s: &str) -> Result<BackgroundCpus, String> {
        match s.trim() {
            "auto" => Ok(BackgroundCpus::Auto),
            "shared" => Ok(BackgroundCpus::Shared),
            list => parse_list(list).map(BackgroundCpus::List),
        }
    }
}

impl fmt::Display for BackgroundCpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackgroundCpus::Auto => f.write_str("auto"),
            BackgroundCpus::Shared => f.write_str("shared"),
            BackgroundCpus::List(cpus) => f.write_str(&format_list(cpus)),
        }
    }
}

impl<'de> Deserialize<'de> for BackgroundCpus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BackgroundCpus::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses "0-3,6" into ascending, distinct CPU numbers.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("{s:?}: expected auto, shared or CPUs like 2-3,6");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= 1024 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// "0-3,6".
pub fn format_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        parts.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    parts.join(",")
}

/// Where each thread goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Shard i's CPU.
    pub shards: Vec<usize>,
    /// The background threads' CPUs; None: not pinned.
    pub background: Option<Vec<usize>>,
}

/// The plan for `shards` shards on the `allowed` CPUs (ascending).
pub fn plan(allowed: &[usize], shards: usize, setting: &BackgroundCpus) -> Plan {
    let allowed: &[usize] = if allowed.is_empty() { &[0] } else { allowed };
    let shard_cpus: Vec<usize> = (0..shards).map(|i| allowed[i % allowed.len()]).collect();
    let background = match setting {
        BackgroundCpus::Shared => None,
        BackgroundCpus::List(cpus) => Some(cpus.clone()),
        BackgroundCpus::Auto => {
            let spare: Vec<usize> = allowed
                .iter()
                .copied()
                .filter(|c| !shard_cpus.contains(c))
                .collect();
            (!spare.is_empty()).then_some(spare)
        }
    };
    Plan {
        shards: shard_cpus,
        background,
    }
}

/// The CPUs this thread may run on, ascending.
#[allow(unsafe_code)] // sched_getaffinity(2): no safe wrapper in std or libc
pub fn allowed() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // fills it for the calling thread (pid 0) and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Restricts the calling thread (and the threads it starts from now on)
/// to `cpus`.
#[allow(unsafe_code)] // sched_setaffinity(2): no safe wrapper in std or libc
pub fn pin_current(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as above; CPU_SET writes within the set for c < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_cpus_take_the_background_threads() {
        let auto = BackgroundCpus::Auto;
        assert_eq!(
            plan(&[0, 1, 2, 3], 3, &auto),
            Plan {
                shards: vec![0, 1, 2],
                background: Some(vec![3])
            }
        );
        // Every CPU has a shard: the background threads share them.
        assert_eq!(plan(&[0, 1], 2, &auto).background, None);
        assert_eq!(plan(&[0, 1], 4, &auto).shards, [0, 1, 0, 1]);
        // `taskset -c 2,5`: the shards go where the process may run.
        assert_eq!(
            plan(&[2, 5], 1, &auto),
            Plan {
                shards: vec![2],
                background: Some(vec![5])
            }
        );
        assert_eq!(
            plan(&[0, 1, 2, 3], 1, &BackgroundCpus::Shared).background,
            None
        );
        assert_eq!(
            plan(&[0, 1, 2, 3], 4, &BackgroundCpus::List(vec![3])).background,
            Some(vec![3])
        );
        assert_eq!(plan(&[], 2, &auto).shards, [0, 0]);
    }

    #[test]
    fn settings_parse_and_print() {
        assert_eq!(BackgroundCpus::parse("auto").unwrap(), BackgroundCpus::Auto);
        assert_eq!(
            BackgroundCpus::parse(" shared ").unwrap(),
            BackgroundCpus::Shared
        );
        assert_eq!(
            BackgroundCpus::parse("6,2-3").unwrap(),
            BackgroundCpus::List(vec![2, 3, 6])
        );
        for bad in ["", "3-2", "x", "1,,2", "4096", "-1"] {
            assert!(BackgroundCpus::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(BackgroundCpus::List(vec![2, 3, 6]).to_string(), "2-3,6");
    }

    #[test]
    fn this_thread_has_cpus() {
        assert!(!allowed().is_empty());
    }
}
