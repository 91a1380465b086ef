//! A one-line progress indicator on stderr, only when stderr is a terminal (scripts and log
//! collectors never see it).

use std::io::{IsTerminal, Write};

pub struct Progress {
    on: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
        }
    }

    /// Replaces the progress line with `text`.
    pub fn say(&self, text: &str) {
        if self.on {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2K{text}");
            let _ = e.flush();
        }
    }

    /// Clears the line.
    pub fn done(&self) {
        self.say("");
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
