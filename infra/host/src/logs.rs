//! The host's log: its own messages and every component's output, one line each.
//!
//! Lines go to stderr as `[source] text`. Tests can also capture them, to prove for
//! example that no secret ever reaches a log line.

use std::sync::{Arc, Mutex};

/// A cheap, cloneable handle on the host log.
#[derive(Debug, Clone, Default)]
pub struct Logs {
    capture: Option<Arc<Mutex<Vec<String>>>>,
    quiet: bool,
}

impl Logs {
    /// A log that writes to stderr and, if `capture`, keeps every line in memory;
    /// `quiet` stops the stderr copy (tests keep their output readable).
    pub fn new(capture: bool, quiet: bool) -> Self {
        Self {
            capture: capture.then(Default::default),
            quiet,
        }
    }

    /// Logs one line from `source` (a component id, or `host`).
    pub fn line(&self, source: &str, text: &str) {
        let line = format!("[{source}] {text}");
        if !self.quiet {
            eprintln!("{line}");
        }
        if let Some(capture) = &self.capture {
            capture
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line);
        }
    }

    /// Logs a host message.
    pub fn host(&self, text: &str) {
        self.line("host", text);
    }

    /// Logs an outbound call refused by `allowed_outbound_hosts`, in Spin's words.
    pub fn denied(&self, component: &str, target: &str) {
        self.host(&format!(
            "Outbound network destination not allowed: {target} (component `{component}`)"
        ));
        self.host(&format!(
            "To allow this request, add 'allowed_outbound_hosts = [\"{target}\"]' to the manifest component section."
        ));
    }

    /// The captured lines so far (empty when capture is off).
    pub fn captured(&self) -> Vec<String> {
        self.capture
            .as_ref()
            .map(|c| {
                c.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default()
    }
}
