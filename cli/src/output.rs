//! Writing to stdout without panicking when the reader has gone away
//! (`mesh status --watch | head`, a closed terminal): the text is dropped.

use std::io::Write as _;

/// Writes `text` to stdout and flushes; `false` if stdout is closed.
pub(crate) fn print(text: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// [`print`] with a newline.
pub(crate) fn print_line(text: &str) -> bool {
    print(&format!("{text}\n"))
}
