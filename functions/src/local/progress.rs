//! The progress line of `ade-backup local` on a terminal: one line on stderr, redrawn in place
//! (`\r` + erase line) at most twice a second, with the deliveries so far and whatever the
//! embedding caller adds (the CLI: VMs protected / in progress / failed, restore tickets).
//! Drawn only when stderr is a terminal or `--progress` asks for it; never otherwise, so logs
//! and captured output carry no control characters.

use super::dispatch::FunctionReport;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the caller adds to the line (called at each redraw).
pub type ProgressExtra = Box<dyn Fn() -> String + Send + Sync>;

/// Redraw at most this often.
pub const REDRAW_EVERY: Duration = Duration::from_millis(500);

/// Whether to draw: asked for, or stderr is a terminal.
pub fn enabled(flag: bool) -> bool {
    flag || std::io::stderr().is_terminal()
}

/// Deliveries summed over the queue-triggered and timer functions.
pub fn deliveries(reports: &BTreeMap<String, FunctionReport>) -> String {
    let (mut inv, mut done, mut retried, mut dead) = (0u64, 0u64, 0u64, 0u64);
    for r in reports.values() {
        inv += r.invocations;
        done += r.completed;
        retried += r.abandoned + r.failed;
        dead += r.dead_lettered;
    }
    format!("deliveries {inv} ({done} completed, {retried} retried, {dead} dead-lettered)")
}

/// The line on a writer (stderr in the product, a buffer in tests).
pub struct ProgressLine<W: Write> {
    out: W,
    extra: Option<ProgressExtra>,
    last: Option<Instant>,
    drawn: bool,
}

impl<W: Write> ProgressLine<W> {
    pub fn new(out: W, extra: Option<ProgressExtra>) -> Self {
        Self {
            out,
            extra,
            last: None,
            drawn: false,
        }
    }

    /// Redraws the line if [`REDRAW_EVERY`] has passed (or `force`).
    pub fn tick(&mut self, deliveries: &str, force: bool) {
        if !force && self.last.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let extra = self.extra.as_ref().map(|f| f()).unwrap_or_default();
        let sep = if extra.is_empty() { "" } else { " · " };
        // Best effort: a closed stderr must not stop the run.
        let _ = write!(self.out, "\r\x1b[2K[local] {deliveries}{sep}{extra}");
        let _ = self.out.flush();
        self.drawn = true;
    }

    /// Ends the line (so the closing messages start on their own line).
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
            self.drawn = false;
        }
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_redrawn_in_place_with_the_callers_part_and_ended_once() {
        let mut reports = BTreeMap::new();
        reports.insert(
            "OnVmEvent".to_string(),
            FunctionReport {
                invocations: 5,
                completed: 3,
                abandoned: 1,
                dead_lettered: 1,
                ..FunctionReport::default()
            },
        );
        let d = deliveries(&reports);
        assert_eq!(d, "deliveries 5 (3 completed, 1 retried, 1 dead-lettered)");
        let mut p = ProgressLine::new(Vec::new(), Some(Box::new(|| "VMs 2 protected".into())));
        p.tick(&d, false);
        p.tick(&d, false); // within REDRAW_EVERY: not drawn again
        p.tick(&d, true);
        p.finish();
        p.finish();
        let out = String::from_utf8(p.into_inner()).expect("utf-8");
        assert_eq!(
            out,
            format!("\r\x1b[2K[local] {d} · VMs 2 protected").repeat(2) + "\n"
        );
    }

    #[test]
    fn nothing_is_written_when_nothing_was_drawn() {
        let mut p = ProgressLine::new(Vec::new(), None);
        p.finish();
        assert!(p.into_inner().is_empty());
    }
}
