//! What a bench reads about a server process it started, from `/proc` (Linux).

use std::time::Duration;

/// CPU time process `pid` has used so far (user and system).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which may hold spaces) start at its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // Linux reports in clock ticks of 1/100 s (USER_HZ).
    Duration::from_millis(ticks * 10)
}
