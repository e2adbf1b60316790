//! The status table: one row per instance, from Consul's health answers.

use crate::consul::model::{Check, HealthEntry};

/// Longest OUTPUT shown, in characters.
const MAX_OUTPUT: usize = 100;

/// One instance's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// Service name.
    pub(crate) service: String,
    /// Service ID.
    pub(crate) instance: String,
    /// `address:port`.
    pub(crate) address: String,
    /// The worst of its checks.
    pub(crate) status: Health,
    /// `Meta.version`.
    pub(crate) version: String,
    /// The gRPC check's output, one line.
    pub(crate) output: String,
}

/// Consul's check states, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    /// Every check passes.
    Passing,
    /// A check warns.
    Warning,
    /// A check fails (or reports a state we do not know).
    Critical,
}

impl Health {
    fn parse(status: &str) -> Self {
        match status {
            "passing" => Health::Passing,
            "warning" => Health::Warning,
            _ => Health::Critical,
        }
    }

    /// `passing`, `warning`, `critical`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

impl Row {
    /// The row of one health entry (node checks count towards its status).
    pub(crate) fn from_entry(entry: &HealthEntry) -> Self {
        let status = entry
            .checks
            .iter()
            .map(|check| Health::parse(&check.status))
            .max()
            .unwrap_or(Health::Passing);
        Self {
            service: entry.service.service.clone(),
            instance: entry.service.id.clone(),
            address: entry.socket_address(),
            status,
            version: entry.meta("version").unwrap_or("").to_owned(),
            output: one_line(instance_check(entry).map_or("", |check| check.output.as_str())),
        }
    }
}

/// The instance's gRPC check, else its first own check.
fn instance_check(entry: &HealthEntry) -> Option<&Check> {
    let own = || {
        entry
            .checks
            .iter()
            .filter(|check| check.service_id == entry.service.id)
    };
    own()
        .find(|check| check.kind.eq_ignore_ascii_case("grpc"))
        .or_else(|| own().next())
}

/// The first non-empty line, trimmed and cut to [`MAX_OUTPUT`] characters.
fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    if line.chars().count() > MAX_OUTPUT {
        let cut: String = line.chars().take(MAX_OUTPUT - 1).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// The table, columns padded, rows sorted by service then instance.
pub(crate) fn render(rows: &[Row]) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
    let mut cells: Vec<[&str; 6]> = vec![[
        "SERVICE", "INSTANCE", "ADDRESS", "STATUS", "VERSION", "OUTPUT",
    ]];
    cells.extend(rows.iter().map(|row| {
        [
            row.service.as_str(),
            row.instance.as_str(),
            row.address.as_str(),
            row.status.as_str(),
            row.version.as_str(),
            row.output.as_str(),
        ]
    }));
    let widths: Vec<usize> = (0..6)
        .map(|column| {
            cells
                .iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in cells {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[column] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRIES: &str = r#"[
      {"Node": {"Address": "127.0.0.1"},
       "Service": {"ID": "users-1", "Service": "users", "Address": "127.0.0.1", "Port": 50051,
                   "Meta": {"version": "0.1.0"}},
       "Checks": [
         {"Status": "passing", "Output": "Agent alive and reachable", "ServiceID": "", "Type": ""},
         {"Status": "passing", "Output": "gRPC check 127.0.0.1:50051/mesh.users.v1.Users: success\n", "ServiceID": "users-1", "Type": "grpc"}
       ]},
      {"Node": {"Address": "127.0.0.1"},
       "Service": {"ID": "users-2", "Service": "users", "Address": "127.0.0.1", "Port": 40001, "Meta": null},
       "Checks": [
         {"Status": "passing", "Output": "Agent alive and reachable", "ServiceID": "", "Type": ""},
         {"Status": "critical", "Output": "\nrpc error: code = Unavailable desc = connection refused\nmore", "ServiceID": "users-2", "Type": "grpc"}
       ]},
      {"Node": {"Address": "127.0.0.1"},
       "Service": {"ID": "users-3", "Service": "users", "Address": "", "Port": 40002, "Meta": {}},
       "Checks": [
         {"Status": "warning", "Output": "slow", "ServiceID": "users-3", "Type": "ttl"},
         {"Status": "critical", "Output": "node down", "ServiceID": "", "Type": ""}
       ]}
    ]"#;

    fn rows() -> Vec<Row> {
        let entries: Vec<HealthEntry> = serde_json::from_str(ENTRIES).unwrap();
        entries.iter().map(Row::from_entry).collect()
    }

    #[test]
    fn status_is_the_worst_check_and_output_the_grpc_checks_first_line() {
        let rows = rows();
        assert_eq!(rows[0].status, Health::Passing);
        assert_eq!(rows[0].version, "0.1.0");
        assert_eq!(
            rows[0].output,
            "gRPC check 127.0.0.1:50051/mesh.users.v1.Users: success"
        );
        assert_eq!(rows[1].status, Health::Critical);
        assert_eq!(
            rows[1].output,
            "rpc error: code = Unavailable desc = connection refused"
        );
        assert_eq!(rows[1].version, "");
        // A failing node check makes the instance critical too; no gRPC
        // check: its own check's output.
        assert_eq!(rows[2].status, Health::Critical);
        assert_eq!(rows[2].output, "slow");
        assert_eq!(rows[2].address, "127.0.0.1:40002");
    }

    #[test]
    fn renders_aligned_sorted_columns() {
        let mut rows = rows();
        rows.reverse();
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("SERVICE  INSTANCE  ADDRESS          STATUS    VERSION  OUTPUT"),
            "{table}"
        );
        assert!(
            lines[1]
                .starts_with("users    users-1   127.0.0.1:50051  passing   0.1.0    gRPC check"),
            "{table}"
        );
        assert!(
            lines[2].contains("users-2") && lines[2].contains("critical"),
            "{table}"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn long_output_is_cut() {
        let long = "x".repeat(500);
        assert_eq!(one_line(&long).chars().count(), MAX_OUTPUT);
    }
}
