//! Timestamps: RFC 3339 at the edges, integer microseconds since the Unix epoch inside.
//!
//! Every time flag (`--since`, `--until`, `--at`) goes through [`parse_flag`], which accepts an
//! RFC 3339 time, a date, or a duration before now, and resolves each to one absolute UTC time
//! before anything reads or stores it.

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

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

/// What a time flag bounds: a date alone means its first microsecond for a lower bound and its
/// last for an upper bound (both bounds are inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `--since`: a date is its UTC midnight.
    Lower,
    /// `--until`: a date is the last microsecond of that UTC day (the next midnight excluded).
    Upper,
    /// A point in time (`mark-purged --at`, `record --started-at`): a date alone is refused,
    /// because the day's midnight would claim a purge earlier than it happened.
    Point,
}

/// The forms a bound (`--since`, `--until`) accepts, for error messages.
pub const TIME_FORMS: &str = "expected an RFC 3339 time (`2026-11-01T09:30:00Z`), a UTC date \
(`2026-11-01`) or a duration before now (`3d`, `12h`, `30m`, `2w`)";

/// The forms a point in time accepts, for error messages.
pub const POINT_FORMS: &str = "expected an RFC 3339 time (`2026-11-01T09:30:00Z`) or a duration \
before now (`30m`, `12h`, `3d`)";

/// Parses a time flag: RFC 3339, a date (`YYYY-MM-DD`, UTC) or a duration before `now`
/// (`3d`, `12h`, `30m`, `2w`, or combined as `1w2d`), resolved to an absolute time. `what`
/// names the flag for the error message.
pub fn parse_flag(
    value: &str,
    what: &str,
    bound: Bound,
    now: Micros,
) -> Result<Micros, ParseError> {
    let text = value.trim();
    let err = |reason: &str| ParseError::new(what, value, reason);
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc).timestamp_micros());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_micros())
            .ok_or_else(|| err(TIME_FORMS))?;
        return match bound {
            Bound::Lower => Ok(midnight),
            Bound::Upper => Ok(midnight + 86_400_000_000 - 1),
            Bound::Point => Err(err(
                "a date alone is not a point in time: give the time of day \
                 (`2026-11-01T09:30:00Z`) or how long ago (`2h`)",
            )),
        };
    }
    // A bare number is neither a date nor a duration: `humantime` would refuse it too, but
    // its message would not show the forms.
    if text.starts_with(|c: char| c.is_ascii_digit())
        && !text.contains(['-', ':', 'T'])
        && let Ok(ago) = humantime::parse_duration(text)
    {
        let ago = Micros::try_from(ago.as_micros()).map_err(|_| err("too long ago"))?;
        return now.checked_sub(ago).ok_or_else(|| err("too long ago"));
    }
    Err(err(match bound {
        Bound::Point => POINT_FORMS,
        Bound::Lower | Bound::Upper => TIME_FORMS,
    }))
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

/// The earliest time RFC 3339 can spell: 0000-01-01T00:00:00Z.
pub const EARLIEST_RFC3339: Micros = -62_167_219_200_000_000;

/// A count of seconds (a setting's) as a span of microseconds, saturating.
pub fn seconds(seconds: u64) -> Micros {
    Micros::try_from(seconds)
        .unwrap_or(Micros::MAX)
        .saturating_mul(1_000_000)
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

    const NOW: Micros = 1_764_806_400_000_000; // 2025-12-04T00:00:00Z

    /// Each accepted form resolves to the absolute time it names.
    #[test]
    fn flag_forms_resolve_to_absolute_times() {
        let p = |v: &str, b: Bound| parse_flag(v, "--since", b, NOW).map(format);
        assert_eq!(
            p("2026-11-01T09:30:00+02:00", Bound::Lower).unwrap(),
            "2026-11-01T07:30:00Z"
        );
        assert_eq!(
            p("2026-11-01", Bound::Lower).unwrap(),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            p("2026-11-01", Bound::Upper).unwrap(),
            "2026-11-01T23:59:59.999999Z"
        );
        assert_eq!(p("3d", Bound::Lower).unwrap(), "2025-12-01T00:00:00Z");
        assert_eq!(p("12h", Bound::Upper).unwrap(), "2025-12-03T12:00:00Z");
        assert_eq!(p("30m", Bound::Point).unwrap(), "2025-12-03T23:30:00Z");
        assert_eq!(p("2w", Bound::Lower).unwrap(), "2025-11-20T00:00:00Z");
        assert_eq!(p("1w2d", Bound::Lower).unwrap(), "2025-11-25T00:00:00Z");
    }

    /// A date and its end bound an inclusive window that holds the whole day and nothing after.
    #[test]
    fn a_date_until_holds_the_whole_day_and_not_the_next() {
        let until = parse_flag("2026-11-01", "--until", Bound::Upper, NOW).unwrap();
        let next = parse_flag("2026-11-02", "--since", Bound::Lower, NOW).unwrap();
        assert_eq!(until + 1, next);
    }

    /// A purge time is never a day's midnight by default: that would claim it earlier.
    #[test]
    fn a_date_is_not_a_point_in_time() {
        let err = parse_flag("2026-11-01", "--at", Bound::Point, NOW).unwrap_err();
        assert!(err.to_string().contains("time of day"), "{err}");
    }

    /// Every refusal names the value and shows an example of each form, on one line.
    #[test]
    fn refusals_show_every_form() {
        for bad in [
            "yesterday",
            "2026-13-01",
            "12",
            "3x",
            "",
            "-3d",
            "2026-11-01T25:00:00Z",
        ] {
            let err = parse_flag(bad, "--since", Bound::Lower, NOW)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            for example in ["2026-11-01T09:30:00Z", "`2026-11-01`", "`3d`"] {
                assert!(err.contains(example), "{err}");
            }
            assert!(!err.contains('\n'), "{err}");
        }
    }

    /// A point in time does not offer the date form it refuses.
    #[test]
    fn point_refusals_show_the_point_forms() {
        let err = parse_flag("soon", "--at", Bound::Point, NOW)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`2026-11-01T09:30:00Z`") && err.contains("`30m`"),
            "{err}"
        );
        assert!(!err.contains("`2026-11-01`"), "{err}");
    }

    /// A duration longer than the epoch allows is refused, not wrapped.
    #[test]
    fn huge_durations_are_refused() {
        assert!(parse_flag("100000000000w", "--since", Bound::Lower, NOW).is_err());
    }

    #[test]
    fn rejects_non_rfc3339() {
        let err = parse_rfc3339("yesterday", "--since").unwrap_err();
        assert!(err.to_string().contains("`yesterday`"), "{err}");
        assert!(err.to_string().contains("--since"), "{err}");
    }
}
