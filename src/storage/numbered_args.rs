//! The `$1…$n` arguments of a statement that a write unit runs on SQLite's
//! writer thread ([`super::SqliteWriter`]), bound by name.
//!
//! The stores' SQL numbers its arguments `$1…$n` (sqlx, and PostgreSQL,
//! read the number). SQLite takes `$1` as a *name* and numbers parameters in
//! the order they first appear, so a statement whose text mentions `$3`
//! before `$2` would take positional arguments in the wrong places. Binding
//! each value to the parameter named `$i` makes the same SQL text correct
//! on both.

use rusqlite::{types::Value, Connection, Row};

/// Values for `$1`, `$2`, … in that order.
#[derive(Debug, Clone, Default)]
pub struct NumberedArgs(Vec<Value>);

impl NumberedArgs {
    /// No arguments yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `value` as the next argument.
    pub fn arg(mut self, value: impl Into<Value>) -> Self {
        self.push(value);
        self
    }

    /// Appends `value` as the next argument.
    pub fn push(&mut self, value: impl Into<Value>) {
        self.0.push(value.into());
    }

    /// Runs `sql` (prepared once per connection and cached) with these
    /// arguments; the rows it changed.
    pub fn execute(&self, connection: &Connection, sql: &str) -> rusqlite::Result<usize> {
        let mut statement = connection.prepare_cached(sql)?;
        self.bind(&mut statement)?;
        statement.raw_execute()
    }

    /// Runs `sql` with these arguments to its end, mapping every row it
    /// returns.
    pub fn rows<T>(
        &self,
        connection: &Connection,
        sql: &str,
        mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut statement = connection.prepare_cached(sql)?;
        self.bind(&mut statement)?;
        let mut rows = statement.raw_query();
        let mut mapped = Vec::new();
        while let Some(row) = rows.next()? {
            mapped.push(map(row)?);
        }
        Ok(mapped)
    }

    /// [`NumberedArgs::rows`]' first row, if any (the statement still runs
    /// to its end).
    pub fn first_row<T>(
        &self,
        connection: &Connection,
        sql: &str,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Option<T>> {
        Ok(self.rows(connection, sql, map)?.into_iter().next())
    }

    /// The same arguments bound, in order, to `query` on the pool (sqlx
    /// and PostgreSQL read `$n`'s number), so one argument list serves both
    /// forms of a read.
    pub fn bind_to<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        self.0.iter().fold(query, |query, value| match value {
            Value::Null => query.bind(None::<i64>),
            Value::Integer(number) => query.bind(*number),
            Value::Real(number) => query.bind(*number),
            Value::Text(text) => query.bind(text.clone()),
            Value::Blob(bytes) => query.bind(bytes.clone()),
        })
    }

    fn bind(&self, statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
        statement.clear_bindings();
        for (at, value) in self.0.iter().enumerate() {
            if let Some(index) = statement.parameter_index(&name(at + 1))? {
                statement.raw_bind_parameter(index, value)?;
            }
        }
        Ok(())
    }
}

/// `$number`, without building the text each time for the usual numbers.
fn name(number: usize) -> std::borrow::Cow<'static, str> {
    const KEPT: usize = 256;
    static NAMES: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..KEPT).map(|number| format!("${number}")).collect());
    match NAMES.get(number) {
        Some(name) => std::borrow::Cow::Borrowed(name.as_str()),
        None => std::borrow::Cow::Owned(format!("${number}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_go_to_their_numbers_whatever_order_the_text_names_them_in() {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE t (a TEXT, b INTEGER, c TEXT)")
            .unwrap();
        // $3 appears before $2: SQLite numbers the names $1, $3, $2.
        let args = NumberedArgs::new()
            .arg("first".to_owned())
            .arg(2_i64)
            .arg("third".to_owned());
        let inserted = args
            .execute(&connection, "INSERT INTO t (a, c, b) VALUES ($1, $3, $2)")
            .unwrap();
        assert_eq!(inserted, 1);
        let row = NumberedArgs::new()
            .arg(2_i64)
            .first_row(&connection, "SELECT a, b, c FROM t WHERE b = $1", |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .unwrap();
        assert_eq!(row, Some(("first".to_owned(), 2, "third".to_owned())));
    }

    #[test]
    fn a_statement_that_uses_an_argument_twice_or_not_at_all_takes_them_by_number() {
        let connection = Connection::open_in_memory().unwrap();
        let rows = NumberedArgs::new()
            .arg(1_i64)
            .arg(5_i64)
            .arg(7_i64)
            .rows(&connection, "SELECT $3 + $1, $1", |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .unwrap();
        assert_eq!(rows, vec![(8, 1)]);
        assert_eq!(
            NumberedArgs::new()
                .first_row(&connection, "SELECT 1 WHERE 0", |row| row.get::<_, i64>(0))
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_parameters_name_is_its_number_however_high() {
        assert_eq!(name(1), "$1");
        assert_eq!(name(255), "$255");
        assert_eq!(name(1000), "$1000");
    }

    #[tokio::test]
    async fn the_same_arguments_bind_in_order_to_a_query_on_the_pool() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = crate::storage::open(
            "numbered_args_test",
            None,
            dir.path(),
            &sqlx::migrate::Migrator::DEFAULT,
        )
        .await
        .expect("open SQLite");
        let args = NumberedArgs::new()
            .arg(41_i64)
            .arg("text".to_owned())
            .arg(1.5_f64)
            .arg(vec![7_u8, 8]);
        let row = args
            .bind_to(sqlx::query(
                "SELECT $1 + 1 AS number, $2 AS text, $3 * 2 AS real, length($4) AS bytes",
            ))
            .fetch_one(&pool)
            .await
            .expect("select");
        use sqlx::Row as _;
        assert_eq!(row.get::<i64, _>("number"), 42);
        assert_eq!(row.get::<String, _>("text"), "text");
        assert_eq!(row.get::<f64, _>("real"), 3.0);
        assert_eq!(row.get::<i64, _>("bytes"), 2);
    }
}
