//! `mesh up`'s terminal output: lines on stdout that never tear the
//! spinner (drawn on stderr, only when stderr is a terminal).

use std::{fmt::Display, sync::Mutex, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

/// The spinner on screen, if any.
static SPINNER: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Prints one line on stdout, above the spinner when one is shown.
pub(crate) fn say(line: impl Display) {
    let spinner = SPINNER.lock().expect("console lock").clone();
    let line = line.to_string();
    match spinner {
        Some(spinner) => spinner.suspend(|| crate::output::print_line(&line)),
        None => crate::output::print_line(&line),
    };
}

/// A spinner with a message; it disappears when dropped.
#[derive(Debug)]
pub(crate) struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    /// Shows a spinner on stderr (hidden when stderr is not a terminal).
    pub(crate) fn start(message: impl Into<String>) -> Self {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        *SPINNER.lock().expect("console lock") = Some(bar.clone());
        Self { bar }
    }

    /// Replaces the message.
    pub(crate) fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        *SPINNER.lock().expect("console lock") = None;
        self.bar.finish_and_clear();
    }
}
