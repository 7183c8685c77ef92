//! JSON as cachewarden writes it: `serde_json`'s, with one more rule for strings. A character
//! text output shows as an escape (C1 controls such as U+009B, the single-character CSI, bidi
//! marks, embeddings, overrides and isolates, zero-width and other invisible characters, line
//! and paragraph separators, spaces other than U+0020: [`escape::needs_escape`] past ASCII) is
//! written `\uXXXX` (a surrogate pair past U+FFFF). The document is still valid JSON and
//! decodes to the same values, but a terminal or a log viewer that shows it raw is not driven
//! or reordered by a name a pipeline chose.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

use crate::report::escape;

/// Whether a JSON string writes `c` as `\uXXXX` beyond what JSON itself requires.
pub fn escapes(c: char) -> bool {
    !c.is_ascii() && escape::needs_escape(c)
}

/// Appends `c` as `\uXXXX`, or as a surrogate pair of them past U+FFFF.
pub fn push_unicode_escape(out: &mut Vec<u8>, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((*unit >> shift) & 0xf)]);
        }
    }
}

/// A `serde_json` formatter that writes [`escapes`] characters as `\uXXXX`.
struct Escaping<F>(F);

impl<F: Formatter> Formatter for Escaping<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Most fragments are ASCII, and pass whole.
        if fragment.is_ascii() || !fragment.chars().any(escapes) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut out = Vec::with_capacity(fragment.len() + 12);
        let mut buf = [0u8; 4];
        for c in fragment.chars() {
            if escapes(c) {
                push_unicode_escape(&mut out, c);
            } else {
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        writer.write_all(&out)
    }

    // The rest is the wrapped formatter's own.

    fn write_null<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.write_null(w)
    }
    fn write_bool<W: ?Sized + io::Write>(&mut self, w: &mut W, v: bool) -> io::Result<()> {
        self.0.write_bool(w, v)
    }
    fn write_i64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: i64) -> io::Result<()> {
        self.0.write_i64(w, v)
    }
    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: u64) -> io::Result<()> {
        self.0.write_u64(w, v)
    }
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        self.0.write_f64(w, v)
    }
    fn write_number_str<W: ?Sized + io::Write>(&mut self, w: &mut W, v: &str) -> io::Result<()> {
        self.0.write_number_str(w, v)
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Writes `value` as compact JSON.
pub fn to_writer<W: io::Write, T: ?Sized + Serialize>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(writer, Escaping(CompactFormatter));
    value.serialize(&mut ser)
}

/// Writes `value` as indented JSON.
pub fn to_writer_pretty<W: io::Write, T: ?Sized + Serialize>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let formatter = Escaping(PrettyFormatter::new());
    let mut ser = serde_json::Serializer::with_formatter(writer, formatter);
    value.serialize(&mut ser)
}

/// `value` as compact JSON.
pub fn to_string<T: ?Sized + Serialize>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(128);
    to_writer(&mut out, value)?;
    // Only UTF-8 and ASCII escapes are written.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// `value` as indented JSON.
pub fn to_string_pretty<T: ?Sized + Serialize>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(128);
    to_writer_pretty(&mut out, value)?;
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that hold what a terminal would act on or hide.
    fn hostile() -> Vec<String> {
        [
            "plain",
            "a\u{9b}31mred",
            "\u{85}next line",
            "web\u{202e}esaeler",
            "\u{2066}isolated\u{2069}",
            "zero\u{200b}width\u{feff}",
            "line\u{2028}sep",
            "no\u{a0}break",
            "tag\u{e007f}",
            "é ü 🦀 日本",
            "quote\" back\\ nl\n",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Compact and indented JSON escape every C1, bidi and invisible character, in keys and
    /// values, and decode to what `serde_json` writes; letters, CJK and emoji stay as they are.
    #[test]
    fn invisible_characters_are_escaped_and_values_kept() {
        let mut map = std::collections::BTreeMap::new();
        for (i, v) in hostile().into_iter().enumerate() {
            map.insert(v.clone(), vec![v, i.to_string()]);
        }
        for text in [to_string(&map).unwrap(), to_string_pretty(&map).unwrap()] {
            assert!(!text.chars().any(escapes), "{text}");
            let back: std::collections::BTreeMap<String, Vec<String>> =
                serde_json::from_str(&text).unwrap();
            assert_eq!(back, map);
            assert!(text.contains("a\\u009b31mred"), "{text}");
            assert!(text.contains("tag\\udb40\\udc7f"), "{text}");
            assert!(text.contains("é ü 🦀 日本"), "{text}");
        }
        assert_eq!(
            to_string_pretty(&map).unwrap().lines().count(),
            serde_json::to_string_pretty(&map).unwrap().lines().count()
        );
        assert_eq!(to_string(&"plain").unwrap(), "\"plain\"");
    }
}
