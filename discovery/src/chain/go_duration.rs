//! Go's `time.Duration` as Consul writes it in config entries and chains:
//! `"5s"`, `"1.5s"`, `"500ms"`, `"1m30s"`, `"0s"` (what `Duration.String()`
//! prints), or a number of nanoseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses Go's duration syntax: one or more `<number><unit>` with units `ns`,
/// `us` (`µs`), `ms`, `s`, `m`, `h`; `0` alone is zero. Negative durations are
/// refused (a timeout cannot be negative).
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return Err(format!("{text:?} is not a duration like 1.5s or 500ms"));
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has a number without a unit"))?;
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 1.5s or 500ms"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{text:?} has the unknown unit {unit:?}")),
        };
        total += value * seconds_per_unit;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("{text:?} is out of range"))
}

/// A duration field that may be absent, `null`, a Go duration string or
/// nanoseconds; zero reads as "not set".
pub(crate) fn optional<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Nanos(u64),
    }
    let duration = match Option::<Raw>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Raw::Text(text)) => parse(&text).map_err(serde::de::Error::custom)?,
        Some(Raw::Nanos(nanos)) => Duration::from_nanos(nanos),
    };
    Ok(Some(duration).filter(|duration| !duration.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_prints() {
        for (text, expected) in [
            ("5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("2h0m0s", Duration::from_secs(7200)),
            ("250µs", Duration::from_micros(250)),
            ("3us", Duration::from_micros(3)),
            ("10ns", Duration::from_nanos(10)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
        ] {
            let parsed = parse(text).unwrap();
            let error = parsed.abs_diff(expected);
            assert!(error < Duration::from_nanos(2), "{text}: {parsed:?}");
        }
    }

    #[test]
    fn refuses_what_go_would_refuse_and_negatives() {
        for text in [
            "",
            "5",
            "s",
            "1.5",
            "-1s",
            "1x",
            "1s2",
            "ten seconds",
            "1e3s",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn reads_strings_nanoseconds_null_and_zero() {
        #[derive(Deserialize)]
        struct Field {
            #[serde(default, deserialize_with = "optional")]
            timeout: Option<Duration>,
        }
        let read = |json: &str| serde_json::from_str::<Field>(json).map(|field| field.timeout);
        assert_eq!(
            read(r#"{"timeout": "2s"}"#).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            read(r#"{"timeout": 1500000000}"#).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(read(r#"{"timeout": null}"#).unwrap(), None);
        assert_eq!(read(r#"{}"#).unwrap(), None);
        assert_eq!(read(r#"{"timeout": "0s"}"#).unwrap(), None);
        assert!(read(r#"{"timeout": "soon"}"#).is_err());
    }
}
