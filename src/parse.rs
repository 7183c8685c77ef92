//! A value that does not parse. Its own module so that the modules that parse (`model`,
//! `time`) depend on it and not on each other.

/// Bytes in any name or id: pipeline, run, step, builder, project, mount id, reference,
/// cache key, record id, commit, ref.
pub const NAME_BYTES: usize = 1024;

/// A value that does not parse, with the flag or field it came from. A long value is shown cut
/// (its head and its length): it can be a megabyte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{}`: {reason}", crate::report::escape::Term(&shown(value)))]
pub struct ParseError {
    pub what: String,
    pub value: String,
    pub reason: String,
}

/// `value`, or its first hundred or so bytes and its length when it is over a name's limit.
fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= NAME_BYTES {
        return value.into();
    }
    let mut end = 100;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len()).into()
}

impl ParseError {
    pub fn new(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
