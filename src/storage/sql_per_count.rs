//! SQL whose text depends on a count — a query with one statement, or one
//! `VALUES` row, per line of a request — built once per count and kept for
//! the process's life, so each count's text is one prepared statement in
//! every connection's cache instead of a string formatted per call.

use std::sync::OnceLock;

/// The texts for counts 1 to `N`, each built on first use.
///
/// ```
/// use mesh::storage::SqlPerCount;
/// static ROWS: SqlPerCount<100> = SqlPerCount::new();
/// let sql = ROWS.get(2, |n| format!("VALUES {}", vec!["(?)"; n].join(", ")));
/// assert_eq!(sql, Some("VALUES (?), (?)"));
/// assert_eq!(ROWS.get(0, |_| unreachable!()), None);
/// assert_eq!(ROWS.get(101, |_| unreachable!()), None);
/// ```
#[derive(Debug)]
pub struct SqlPerCount<const N: usize>([OnceLock<String>; N]);

impl<const N: usize> SqlPerCount<N> {
    /// No text built yet.
    pub const fn new() -> Self {
        Self([const { OnceLock::new() }; N])
    }

    /// The text for `count` (built by `build(count)` the first time), or
    /// `None` when `count` is 0 or above `N`.
    pub fn get(
        &'static self,
        count: usize,
        build: impl FnOnce(usize) -> String,
    ) -> Option<&'static str> {
        let cell = self.0.get(count.checked_sub(1)?)?;
        Some(cell.get_or_init(|| build(count)))
    }
}

impl<const N: usize> Default for SqlPerCount<N> {
    fn default() -> Self {
        Self::new()
    }
}
