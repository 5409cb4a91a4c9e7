//! Human units in the config file: durations (`"500ms"`, `"10s"`, `"5m"`, or a number of seconds)
//! and byte sizes (`"64KiB"`, `"10MB"`, or a number of bytes). Parsing is pure so it is unit-tested.
//!
//! Every duration, written as a string or as a number, goes through [`bounded`]: nothing longer
//! than [`MAX_DURATION`] reaches a timer, so `check` refuses what `run` could not use.

use serde::Deserialize;
use std::time::Duration;

/// A duration as written in the config; `0` is allowed and means "disabled" where a field says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfDuration(pub Duration);

/// A byte count as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfSize(pub u64);

/// The longest duration the config accepts in any form (string, integer, environment variable):
/// a year is longer than any timeout or interval means, and keeps every timer far from the
/// clock's range.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The one bound check for durations: `shown` is the value as written, for the message.
pub fn bounded(d: Duration, shown: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("invalid duration {shown}: longer than a year"));
    }
    Ok(d)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"500ms\", \"10s\", \"5m\""))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    let shown = format!("{s:?}");
    // Out of `Duration`'s range (or not finite) is longer than a year too.
    let d = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    bounded(d, &shown)
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. \"64KiB\", \"10MB\" or bytes"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    value
        .checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Accepts a TOML string or a non-negative integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for ConfDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"10s\" or a number of seconds")
        })? {
            NumOrStr::Num(n) if n >= 0 => bounded(Duration::from_secs(n as u64), &n.to_string())
                .map(ConfDuration)
                .map_err(serde::de::Error::custom),
            NumOrStr::Num(n) => Err(serde::de::Error::custom(format!(
                "invalid duration {n}: must not be negative"
            ))),
            NumOrStr::Str(s) => parse_duration(&s)
                .map(ConfDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for ConfSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a size such as \"10MiB\" or a number of bytes")
        })? {
            NumOrStr::Num(n) if n >= 0 => Ok(ConfSize(n as u64)),
            NumOrStr::Num(n) => Err(serde::de::Error::custom(format!(
                "invalid size {n}: must not be negative"
            ))),
            NumOrStr::Str(s) => parse_size(&s)
                .map(ConfSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("400d").is_err());
    }

    fn conf_duration(toml_value: &str) -> Result<Duration, String> {
        #[derive(Deserialize)]
        struct T {
            d: ConfDuration,
        }
        toml::from_str::<T>(&format!("d = {toml_value}"))
            .map(|t| t.d.0)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn strings_and_integers_share_the_one_year_bound() {
        assert_eq!(conf_duration("31536000"), Ok(MAX_DURATION));
        assert_eq!(conf_duration("\"365d\""), Ok(MAX_DURATION));
        assert_eq!(conf_duration("\"8760h\""), Ok(MAX_DURATION));
        assert_eq!(
            conf_duration("31536001"),
            Err("invalid duration 31536001: longer than a year".into())
        );
        assert_eq!(
            conf_duration("\"31536001\""),
            Err("invalid duration \"31536001\": longer than a year".into())
        );
        assert_eq!(
            conf_duration("9223372036854775807"),
            Err("invalid duration 9223372036854775807: longer than a year".into())
        );
        assert!(
            conf_duration("\"99999999999999999999999999d\"")
                .unwrap_err()
                .contains("longer than a year"),
            "past Duration's range: refused, not a panic"
        );
        assert!(
            conf_duration("-1")
                .unwrap_err()
                .contains("must not be negative")
        );
        assert_eq!(conf_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1mib").unwrap(), 1 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12 parsecs").is_err());
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
