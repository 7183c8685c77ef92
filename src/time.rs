//! Timestamps: RFC 3339 at the edges, integer microseconds since the Unix epoch inside.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use crate::parse::ParseError;

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
    Rfc3339(micros).to_string()
}

/// A time that displays (and serializes) as [`format`] does, without allocating: output of
/// hundreds of thousands of times writes them straight into the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub Micros);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0;
        // Years 1970-9999 by hand; anything else through chrono.
        if !(0..253_402_300_800_000_000).contains(&micros) {
            return f.write_str(&slow_format(micros));
        }
        let seconds = micros / 1_000_000;
        let fraction = micros % 1_000_000;
        let (days, of_day) = (seconds / 86_400, seconds % 86_400);
        let (year, month, day) = civil_from_days(days);
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        put(&mut buf[0..4], year);
        put(&mut buf[5..7], month);
        put(&mut buf[8..10], day);
        put(&mut buf[11..13], of_day / 3600);
        put(&mut buf[14..16], of_day / 60 % 60);
        put(&mut buf[17..19], of_day % 60);
        let len = if fraction == 0 {
            buf[19] = b'Z';
            20
        } else if fraction % 1000 == 0 {
            put(&mut buf[20..23], fraction / 1000);
            buf[23] = b'Z';
            24
        } else {
            put(&mut buf[20..26], fraction);
            27
        };
        f.write_str(std::str::from_utf8(&buf[..len]).expect("ASCII digits"))
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Writes `value` as zero-padded decimal digits filling `out`.
fn put(out: &mut [u8], mut value: i64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days >= 0).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn slow_format(micros: Micros) -> String {
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
    fn display_agrees_with_chrono() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut samples = vec![
            0,
            1,
            999,
            1000,
            1_000_000,
            951_782_400_000_000,
            4_107_542_399_999_999,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let micros = (x % 253_402_300_800_000_000) as i64;
            samples.extend([micros, micros - micros % 1000, micros - micros % 1_000_000]);
        }
        samples.extend([-1, -1_000_000, 253_402_300_800_000_000]);
        for micros in samples {
            assert_eq!(Rfc3339(micros).to_string(), slow_format(micros), "{micros}");
        }
    }

    #[test]
    fn rejects_non_rfc3339() {
        let err = parse_rfc3339("yesterday", "--since").unwrap_err();
        assert!(err.to_string().contains("`yesterday`"), "{err}");
        assert!(err.to_string().contains("--since"), "{err}");
    }
}
