//! The one parser of durations given on a command line or in an environment
//! variable: `500ms`, `2s`, `1.5s`, `2m`, `1h`, or a bare number, whose unit
//! the flag's help names: milliseconds for the services' and `mesh up`'s
//! duration flags (`--drain`, `--check-interval`…, whose environment
//! variables keep their `_MS` names, and whose old `--*-ms` spellings stay as
//! hidden aliases), seconds for `mesh up --ready-timeout` and `mesh-bench
//! --duration`. Flags are named for what they are, never for a unit.

use std::time::Duration;

/// The unit of a bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareUnit {
    /// `2000` is two seconds (`--drain`, `--check-interval`…).
    Millis,
    /// `10` is ten seconds.
    Seconds,
}

/// Parses `text` as a duration (see the module docs).
pub fn parse(text: &str, bare: BareUnit) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 2s or 1m"))?;
    let nanos_per_unit = match (unit.trim(), bare) {
        ("", BareUnit::Millis) | ("ms", _) => 1e6,
        ("", BareUnit::Seconds) | ("s", _) => 1e9,
        ("m" | "min", _) => 60e9,
        ("h", _) => 3600e9,
        (other, _) => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    let nanos = (value * nanos_per_unit).round();
    if !(0.0..=u64::MAX as f64).contains(&nanos) {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A clap value parser: [`parse`] with `bare`, refusing anything shorter
/// than `min` (`Duration::ZERO` accepts zero).
pub fn parser(
    bare: BareUnit,
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = parse(text, bare)?;
        if duration < min {
            return Err(format!(
                "{text:?} is shorter than the least allowed, {min:?}"
            ));
        }
        Ok(duration)
    }
}

/// The millisecond flags (`--drain`…): bare numbers are milliseconds; zero allowed.
pub fn millis(text: &str) -> Result<Duration, String> {
    parse(text, BareUnit::Millis)
}

/// The millisecond flags that must be at least one millisecond.
pub fn positive_millis(text: &str) -> Result<Duration, String> {
    parser(BareUnit::Millis, Duration::from_millis(1))(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_numbers() {
        let ms = |text| parse(text, BareUnit::Millis);
        assert_eq!(ms("2000"), Ok(Duration::from_secs(2)));
        assert_eq!(ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(ms(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert_eq!(ms("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(ms("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(ms("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(ms("0"), Ok(Duration::ZERO));
        assert_eq!(parse("10", BareUnit::Seconds), Ok(Duration::from_secs(10)));
        assert_eq!(
            parse("250ms", BareUnit::Seconds),
            Ok(Duration::from_millis(250))
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        for bad in ["", "s", "-1s", "1.2.3s", "ten", "1e3", "5 days"] {
            let error = parse(bad, BareUnit::Millis).unwrap_err();
            assert!(error.contains(bad.trim()), "{bad:?}: {error}");
        }
        assert!(parse("5d", BareUnit::Millis)
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse("99999999999h", BareUnit::Millis)
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn a_minimum_is_enforced() {
        assert!(positive_millis("0").unwrap_err().contains("shorter"));
        assert_eq!(positive_millis("1"), Ok(Duration::from_millis(1)));
        let recheck = parser(BareUnit::Millis, Duration::from_millis(100));
        assert!(recheck("99").is_err());
        assert_eq!(recheck("0.1s"), Ok(Duration::from_millis(100)));
    }
}
