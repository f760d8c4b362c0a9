//! CPU time and resident memory of the benchmarks' processes and threads, as `/proc` counts
//! them (in clock ticks, so that a process and a thread compared with it are counted alike,
//! kernel work done on their behalf included).

use std::time::Duration;

/// One clock tick of `/proc` (`USER_HZ` is 100 on Linux).
pub const TICK: Duration = Duration::from_millis(10);

/// CPU time (user and system, every thread) of process `pid` so far.
#[must_use]
pub fn of_process(pid: u32) -> Duration {
    of_stat(&format!("/proc/{pid}/stat"))
}

/// CPU time (user and system) of the calling thread so far.
#[must_use]
pub fn of_this_thread() -> Duration {
    of_stat(&format!(
        "/proc/self/task/{}/stat",
        rustix::thread::gettid().as_raw_nonzero()
    ))
}

/// User and system time in a `stat` file of `/proc`.
fn of_stat(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = f[11].parse::<u32>().expect("utime") + f[12].parse::<u32>().expect("stime");
    TICK * ticks
}

/// Resident memory of process `pid`, in KiB.
#[must_use]
pub fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
