//! Timestamps: RFC 3339 at the edges, integer microseconds since the Unix epoch inside.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use crate::model::ParseError;

/// Microseconds since the Unix epoch, UTC. The store keeps times in this form so that
/// comparisons are integer comparisons and indexes stay small.
pub type Micros = i64;

/// Parses an RFC 3339 time; `what` names the flag or field for the error message.
pub fn parse_rfc3339(value: &str, what: &str) -> Result<Micros, ParseError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|err| ParseError::new(what, value, format!("not an RFC 3339 time ({err})")))
}

/// Formats a time as RFC 3339 UTC, with sub-second digits only when they are not zero.
pub fn format(micros: Micros) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) if micros % 1_000_000 == 0 => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => micros.to_string(),
    }
}

/// The current time.
pub fn now() -> Micros {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_whole_and_fractional_seconds() {
        let t = parse_rfc3339("2026-03-01T10:00:00+01:00", "--at").unwrap();
        assert_eq!(format(t), "2026-03-01T09:00:00Z");
        let t = parse_rfc3339("2026-03-01T09:00:00.250Z", "--at").unwrap();
        assert_eq!(format(t), "2026-03-01T09:00:00.250Z");
    }

    #[test]
    fn rejects_non_rfc3339() {
        let err = parse_rfc3339("yesterday", "--since").unwrap_err();
        assert!(err.to_string().contains("`yesterday`"), "{err}");
        assert!(err.to_string().contains("--since"), "{err}");
    }
}
