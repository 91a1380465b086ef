//! What a `harness = false` benchmark was asked to run: `cargo bench --bench X -- a b` runs the
//! scenarios `a` and `b`; no name (or `all`) runs every one. Cargo's own `--bench`-style flags are
//! ignored.

/// The scenarios named on the command line.
pub struct Selection {
    names: Vec<String>,
}

impl Selection {
    /// From this process's arguments.
    pub fn from_args() -> Self {
        Self::new(std::env::args().skip(1))
    }

    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Self {
            names: args.into_iter().filter(|a| !a.starts_with("--")).collect(),
        }
    }

    /// Whether the scenario `name` runs.
    pub fn wants(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|w| w == name || w == "all")
    }
}

/// A free loopback port (free when picked; a caller that races for it retries).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// A `/proc/{pid}/status` figure in KiB (`VmHWM:`, `VmRSS:`, `RssAnon:`, ...) of process `pid`,
/// or of this process when `pid` is `None`; `None` where there is no procfs or no such field.
pub fn status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::Selection;

    #[test]
    fn no_name_or_all_runs_everything_and_flags_are_not_names() {
        let s = |a: &[&str]| Selection::new(a.iter().map(|x| x.to_string()));
        assert!(s(&["--bench"]).wants("x"));
        assert!(s(&["all"]).wants("x"));
        let one = s(&["--bench", "a"]);
        assert!(one.wants("a") && !one.wants("b"));
    }
}
