//! Store values shown to people. Every name in the store was written by a CI pipeline, which
//! is how an attacker gets in: a name must not forge a line, drive the terminal, or render as
//! live Markdown. [`Term`] shows a value as one line of plain text, [`MdCode`] as a Markdown
//! code span that the value cannot close, [`MdText`] as Markdown text with nothing live, and
//! [`MdLine`] a message that already holds values as [`Term`] shows them. [`Quoted`] puts a
//! value in a stored message (an audit finding's) between backticks it cannot close.
//! JSON has its own string escaping (`report::json`) and takes values whole; a DOT label holds a value as
//! [`Term`] shows it.

use std::fmt::{self, Write as _};

/// How many characters of a name a text table shows; longer names are cut in the middle (the
/// full value is in the JSON output).
pub const SHORT: usize = 120;

/// Whether `c` is shown as an escape: C0 and C1 controls, DEL, the characters a terminal
/// draws as nothing or uses to reorder the line ([`is_invisible`]), and the backslash itself,
/// so that every escape can be read back to one value. Otherwise `web-rel\u{200b}ease` would
/// look like `web-release`, and a bidi override would show one name as another.
pub fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || (!c.is_ascii() && is_invisible(c))
}

/// Whether `c` is a format character (Unicode category Cf: zero-width spaces and joiners, bidi
/// marks, embeddings, overrides and isolates, the byte order mark, tag characters), another
/// default-ignorable code point (soft hyphen, Hangul fillers, variation selectors, and those
/// not yet assigned), the line or paragraph separator, a space other than U+0020 (category
/// Zs: no-break, en, em, thin, ideographic and the like), or U+2800 BRAILLE PATTERN BLANK, as
/// of Unicode 16. A terminal draws most of them as nothing or as a plain space, and the rest
/// (Arabic number signs and the like) only joined to the text beside them. An emoji sequence
/// joined by U+200D or ended by a variation selector shows that character as an escape too;
/// letters, CJK and emoji are shown as they are.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{a0}'
            | '\u{ad}'
            | '\u{34f}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{115f}'..='\u{1160}'
            | '\u{1680}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{2000}'..='\u{200f}'
            | '\u{2028}'..='\u{202f}'
            | '\u{205f}'..='\u{206f}'
            | '\u{2800}'
            | '\u{3000}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// Whether `value` is printable ASCII without a backslash or a backtick: shown as it is, one
/// character a byte. Almost every name is; this is the fast path of a large trace.
pub fn is_plain_ascii(value: &str) -> bool {
    // No early exit: the compiler vectorizes the whole scan, and names are short.
    !value.bytes().fold(false, |bad, b| {
        bad | !(0x20..0x7f).contains(&b) | (b == b'\\') | (b == b'`')
    })
}

/// Whether [`Term`] shows `c` as an escape: what [`needs_escape`] says, and a backtick, which
/// would end the quotes messages put a name in (`` mount `x` on `y` ``) and let the name go on
/// as the message's own text.
fn term_escapes(c: char) -> bool {
    c == '`' || needs_escape(c)
}

/// Whether `value` is shown as it is.
pub fn is_plain(value: &str) -> bool {
    // Every character that needs escaping is ASCII below 0x20, `\`, a backtick, DEL, or not
    // ASCII.
    is_plain_ascii(value) || !value.chars().any(term_escapes)
}

fn write_escaped(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if !term_escapes(c) => f.write_char(c),
        c if u32::from(c) < 0x80 => write!(f, "\\x{:02x}", u32::from(c)),
        c => write!(f, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// A store value as one line of terminal text: controls and invisible characters as `\n`,
/// `\x1b`, `\u{202e}`, `\u{200b}`, and `\` as `\\`. Everything else is shown as it is.
#[derive(Debug, Clone, Copy)]
pub struct Term<'a>(pub &'a str);

impl fmt::Display for Term<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_plain(self.0) {
            return f.pad(self.0);
        }
        let mut out = String::with_capacity(self.0.len() + 8);
        for c in self.0.chars() {
            write_escaped(&mut out, c)?;
        }
        f.pad(&out)
    }
}

/// A value as [`Term`] shows it, but for backticks, for Markdown text, which escapes them as it
/// escapes all punctuation.
#[derive(Debug, Clone, Copy)]
struct Prose<'a>(&'a str);

impl fmt::Display for Prose<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(self.0.len());
        for c in self.0.chars() {
            if c == '`' {
                out.push(c);
            } else {
                write_escaped(&mut out, c)?;
            }
        }
        f.pad(&out)
    }
}

/// A store value put in a message between backticks, a backtick or backslash it holds
/// preceded by a backslash, so that it cannot end the quotes and go on as the message's own
/// text. Nothing else is escaped: the message is kept as it is (JSON takes it whole), and a
/// terminal shows it with [`Line`], which escapes controls and leaves these escapes alone.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('`')?;
        for c in self.0.chars() {
            if c == '`' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('`')
    }
}

/// Free-form text that may hold store values, some already shown as [`Term`] (error chains,
/// warnings, check results): controls, bidi and invisible characters are escaped as [`Term`]
/// escapes them, but a backslash is left alone, so what was escaped once is not escaped again.
/// Names that the caller has in hand are shown with [`Term`], which is unambiguous; this keeps
/// the rest on one line.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a>(pub &'a str);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.chars().any(|c| c != '\\' && needs_escape(c)) {
            return f.pad(self.0);
        }
        let mut out = String::with_capacity(self.0.len() + 8);
        for c in self.0.chars() {
            // A message's own quotes stay as they are.
            if c == '\\' || c == '`' {
                out.push(c);
            } else {
                write_escaped(&mut out, c)?;
            }
        }
        f.pad(&out)
    }
}

/// What marks where [`Short`] cut a value.
const CUT: char = '…';

/// How many bytes of a cut value's SHA-256 [`Short`] shows: enough that no one can make two
/// values that show the same.
const CUT_HASH_BYTES: usize = 16;

/// A store value as [`Term`] shows it, cut in the middle to at most [`SHORT`] characters for a
/// text table: `head…HASH…tail`, the tail kept because digests and ids end there, and `HASH`
/// the first 128 bits of the whole value's SHA-256 in hex, so that two long names that share
/// their ends still show apart. A `…` the value holds is shown as `\u{2026}`, so that only a
/// cut shows one and a name cannot pass for another's cut form.
#[derive(Debug, Clone, Copy)]
pub struct Short<'a>(pub &'a str);

impl<'a> Short<'a> {
    /// The text shown, and how many characters it has.
    pub fn text_and_width(&self) -> (std::borrow::Cow<'a, str>, usize) {
        if self.0.len() <= SHORT && is_plain_ascii(self.0) {
            return (self.0.into(), self.0.len());
        }
        let text = self.text();
        let width = text.chars().count();
        (text, width)
    }

    /// The text shown.
    pub fn text(&self) -> std::borrow::Cow<'a, str> {
        let escaped: std::borrow::Cow<'a, str> = if is_plain(self.0) && !self.0.contains(CUT) {
            self.0.into()
        } else {
            Term(self.0).to_string().replace(CUT, "\\u{2026}").into()
        };
        if escaped.chars().count() <= SHORT {
            return escaped;
        }
        // Cut between the characters of the value, never inside the escape of one.
        let units: Vec<std::borrow::Cow<'_, str>> = self
            .0
            .chars()
            .map(|c| match c {
                CUT => "\\u{2026}".into(),
                c if term_escapes(c) => {
                    let mut one = String::new();
                    let _ = write_escaped(&mut one, c);
                    one.into()
                }
                c => c.to_string().into(),
            })
            .collect();
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(self.0.as_bytes());
        let mark = 2 + 2 * CUT_HASH_BYTES;
        let tail = (SHORT - mark) / 2;
        let head = SHORT - mark - tail;
        let taken = |units: &mut dyn Iterator<Item = &std::borrow::Cow<'_, str>>, room: usize| {
            let mut width = 0;
            units
                .take_while(|unit| {
                    width += unit.chars().count();
                    width <= room
                })
                .count()
        };
        let first = taken(&mut units.iter(), head);
        let last = taken(&mut units.iter().rev(), tail).min(units.len() - first);
        let mut out = String::with_capacity(SHORT * 4);
        out.extend(units[..first].iter().map(AsRef::<str>::as_ref));
        out.push(CUT);
        for byte in &hash[..CUT_HASH_BYTES] {
            let _ = write!(out, "{byte:02x}");
        }
        out.push(CUT);
        out.extend(units[units.len() - last..].iter().map(AsRef::<str>::as_ref));
        out.into()
    }
}

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.text())
    }
}

/// A store value as a Markdown code span, which shows it as it is: backslash escapes do not work
/// inside a code span, so what a reader copies from it (a follow-up command, a key, a path) is
/// the value itself. It is fenced by more backticks than the value has in a row. In a table
/// cell (`cell`), `|` is written `\|`, which GitHub's tables read as a `|` inside the cell,
/// code spans included.
///
/// A value that a code span cannot show as it is is shown as [`MdText`] instead, outside any
/// code span, so the escapes it holds cannot be taken for the value: one with a control or
/// invisible character (a line break would end the span or start a block, and the rest would
/// reach the reader raw), and in a cell one with `\|`, which GitHub's tables do not hold in a
/// code span as it is (an odd run of backslashes before a `|` ends the cell there).
#[derive(Debug, Clone, Copy)]
pub struct MdCode<'a> {
    pub value: &'a str,
    pub cell: bool,
}

impl<'a> MdCode<'a> {
    /// A code span outside a table.
    pub fn span(value: &'a str) -> Self {
        Self { value, cell: false }
    }

    /// A code span inside a table cell.
    pub fn cell(value: &'a str) -> Self {
        Self { value, cell: true }
    }

    /// Whether a code span shows the value as it is.
    fn fits(&self) -> bool {
        let escaped = self.value.chars().any(|c| c != '\\' && needs_escape(c));
        let pipe = self.cell && self.value.contains("\\|");
        !escaped && !pipe
    }
}

impl fmt::Display for MdCode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.fits() {
            return MdText(self.value).fmt(f);
        }
        // A code span holds backticks, inside a longer fence.
        let text = if self.cell {
            self.value.replace('|', "\\|")
        } else {
            self.value.to_owned()
        };
        let mut longest = 0;
        let mut run = 0;
        for c in text.chars() {
            run = if c == '`' { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        let fence = "`".repeat(longest + 1);
        // A space each side keeps a value that starts or ends with a backtick from joining the
        // fence, and keeps the spaces of one that starts and ends with a space: CommonMark
        // strips one space from each side of such a span.
        if text.is_empty() {
            return f.write_str("` `");
        }
        let spaced = text.starts_with(' ') && text.ends_with(' ') && !text.trim().is_empty();
        let pad = if text.starts_with('`') || text.ends_with('`') || spaced {
            " "
        } else {
            ""
        };
        write!(f, "{fence}{pad}{text}{pad}{fence}")
    }
}

/// A value as Markdown text: escaped as [`Term`] escapes it, then every ASCII punctuation
/// character backslash-escaped, so no emphasis, link, image, heading, HTML or autolink is live.
/// In a table cell `|` is escaped too (it is punctuation).
#[derive(Debug, Clone, Copy)]
pub struct MdText<'a>(pub &'a str);

impl fmt::Display for MdText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A backtick is escaped below, as all punctuation is.
        for c in Prose(self.0).to_string().chars() {
            if c.is_ascii_punctuation() {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        Ok(())
    }
}

/// A message as Markdown text: a line that may already hold store values as [`Term`] shows them
/// (verification checks, action errors), escaped as [`Line`] escapes it, so an escape is not
/// escaped again, then every ASCII punctuation character backslash-escaped as [`MdText`] does.
/// It renders as the terminal shows it.
#[derive(Debug, Clone, Copy)]
pub struct MdLine<'a>(pub &'a str);

impl fmt::Display for MdLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in Line(self.0).to_string().chars() {
            if c.is_ascii_punctuation() {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newline, ANSI escapes, DEL, C1 controls, bidi overrides and marks, and characters
    /// drawn as nothing are shown as escapes, and a backslash is doubled so `\n` typed in a
    /// name cannot pass for a newline. Letters, CJK and emoji are shown as they are.
    #[test]
    fn terminal_text_escapes_controls_bidi_invisible_and_backslash() {
        let cases = [
            ("plain/name:1", "plain/name:1"),
            ("a\nCLEAN  run:x", "a\\nCLEAN  run:x"),
            ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),
            ("a\\nb", "a\\\\nb"),
            ("tab\there\r", "tab\\there\\r"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            ("rlo\u{202e}gpj.exe", "rlo\\u{202e}gpj.exe"),
            ("iso\u{2066}x\u{2069}", "iso\\u{2066}x\\u{2069}"),
            ("web-rel\u{200b}ease", "web-rel\\u{200b}ease"),
            ("/x` on `prod", "/x\\x60 on \\x60prod"),
            ("zw\u{200c}nj\u{200d}", "zw\\u{200c}nj\\u{200d}"),
            ("wj\u{2060}\u{2064}", "wj\\u{2060}\\u{2064}"),
            ("\u{feff}bom", "\\u{feff}bom"),
            (
                "lrm\u{200e}rlm\u{200f}alm\u{61c}",
                "lrm\\u{200e}rlm\\u{200f}alm\\u{61c}",
            ),
            (
                "tag\u{e0001}\u{e0041}\u{e007f}",
                "tag\\u{e0001}\\u{e0041}\\u{e007f}",
            ),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("soft\u{ad}hyphen", "soft\\u{ad}hyphen"),
            ("mvs\u{180e}", "mvs\\u{180e}"),
            (
                "\u{115f}\u{1160}\u{3164}\u{ffa0}",
                "\\u{115f}\\u{1160}\\u{3164}\\u{ffa0}",
            ),
            ("vs\u{fe0f}\u{e0100}", "vs\\u{fe0f}\\u{e0100}"),
            ("👩\u{200d}💻", "👩\\u{200d}💻"),
            ("héllo wörld 🦀", "héllo wörld 🦀"),
            ("日本語 한글 مرحبا Ωμέγα ❤", "日本語 한글 مرحبا Ωμέγα ❤"),
        ];
        for (value, shown) in cases {
            assert_eq!(Term(value).to_string(), shown, "{value:?}");
            assert!(
                !Term(value)
                    .to_string()
                    .chars()
                    .any(|c| c != '\\' && needs_escape(c))
            );
        }
        assert_eq!(format!("{:<6}|", Term("a\nb")), "a\\nb  |");
    }

    /// Escaping is unambiguous: two different values never show the same.
    #[test]
    fn terminal_escaping_is_injective_on_confusable_values() {
        let values = [
            "\n",
            "\\n",
            "\\\n",
            "\x1b",
            "\\x1b",
            "\u{202e}",
            "\\u{202e}",
            "web-release",
            "web-rel\u{200b}ease",
            "web-rel\\u{200b}ease",
            "web-rel\u{2060}ease",
            "web-release\u{e007f}",
            "\u{feff}web-release",
            "web release",
            "web\u{a0}release",
            "web\u{3000}release",
            "web\u{2009}release",
            "web-release\u{2800}",
            "web-release\u{3164}",
            "web-release\u{ffa0}",
            "\u{115f}web-release",
            "\u{1160}web-release",
        ];
        let shown: std::collections::HashSet<String> =
            values.iter().map(|v| Term(v).to_string()).collect();
        assert_eq!(shown.len(), values.len());
    }

    /// Free-form lines keep their backslashes but lose their line breaks and escapes.
    #[test]
    fn free_form_lines_stay_one_line() {
        assert_eq!(Line("a\\nb\nc\x1b").to_string(), "a\\nb\\nc\\x1b");
        assert_eq!(Line("plain").to_string(), "plain");
        // A message's own quotes stay, even beside what is escaped.
        assert_eq!(
            Line("no mount `a\x1b` on `b`").to_string(),
            "no mount `a\\x1b` on `b`"
        );
        assert_eq!(Line("a\u{200b}b\\n").to_string(), "a\\u{200b}b\\n");
    }

    /// Besides the backslash, exactly the characters that Unicode classes as controls, format
    /// characters, default-ignorable, line, paragraph or space separators (but U+0020), and
    /// U+2800 BRAILLE PATTERN BLANK are escaped. When
    /// Unicode adds to these classes (through the Unicode tables of `regex-syntax`), this fails
    /// until [`is_invisible`] has the new characters.
    #[test]
    fn escaped_characters_are_the_unicode_classes() {
        let pattern =
            r"[[\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}\p{Zs}\x{2800}\\]&&[^ ]]";
        let hir = regex_syntax::parse(pattern).unwrap();
        let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) =
            hir.kind()
        else {
            panic!("{pattern} is not a class: {hir:?}");
        };
        let ranges: Vec<(char, char)> = class
            .ranges()
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect();
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let at = ranges.partition_point(|&(_, end)| end < c);
            let listed = ranges.get(at).is_some_and(|&(start, _)| start <= c);
            assert_eq!(needs_escape(c), listed, "U+{:04X}", u32::from(c));
        }
    }

    /// Reads back what [`Term`] shows.
    fn unescape(shown: &str) -> String {
        let mut out = String::new();
        let mut chars = shown.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next().unwrap() {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
                }
                'u' => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                other => panic!("unknown escape `\\{other}`"),
            }
        }
        out
    }

    proptest::proptest! {
        /// Whatever a name holds, [`Term`] shows it on one line with no control, bidi or
        /// invisible character, and what it shows reads back to the name: the escaping is
        /// unambiguous.
        #[test]
        fn terminal_text_is_one_line_and_reads_back(
            value in "(\\PC|[\\p{Cc}\\p{Cf}\\p{Default_Ignorable_Code_Point}\\p{Zl}\\p{Zp}\\p{Zs}\\x{2800}\\\\])*"
        ) {
            let shown = Term(&value).to_string();
            proptest::prop_assert!(!shown.chars().any(|c| needs_escape(c) && c != '\\'));
            proptest::prop_assert_eq!(unescape(&shown), value);
        }
    }

    /// A long name is cut in the middle to the table width, keeping its end.
    #[test]
    fn long_names_are_shortened_keeping_both_ends() {
        let long = format!("mount:b:{}{}", "x".repeat(100_000), "END");
        let shown = Short(&long).to_string();
        assert_eq!(shown.chars().count(), SHORT);
        assert!(shown.starts_with("mount:b:x") && shown.ends_with("xEND"));
        assert_eq!(shown.matches('…').count(), 2);
        assert_eq!(Short("short").to_string(), "short");
        // Escapes are counted as shown, and a cut never splits a character or its escape.
        for (c, escape) in [('\n', "\\n"), ('\u{202e}', "\\u{202e}"), ('…', "\\u{2026}")] {
            let shown = Short(&c.to_string().repeat(1000)).to_string();
            assert!(shown.chars().count() <= SHORT, "{shown}");
            let (head, rest) = shown.split_once('…').unwrap();
            let (_, tail) = rest.split_once('…').unwrap();
            for part in [head, tail] {
                assert!(
                    !part.is_empty() && part.replace(escape, "").is_empty(),
                    "{shown}"
                );
            }
        }
    }

    /// Two long names that differ only where the cut falls show apart, and no name shows as
    /// another's cut form: a `…` a name holds is escaped.
    #[test]
    fn cut_names_never_show_the_same() {
        let name = |middle: &str| format!("{}{middle}{}", "a".repeat(100), "z".repeat(100));
        let (one, two) = (name("1"), name("2"));
        let (shown_one, shown_two) = (Short(&one).to_string(), Short(&two).to_string());
        assert_ne!(shown_one, shown_two);
        assert_eq!(shown_two.chars().count(), SHORT);
        // A name that holds exactly another's cut form shows otherwise.
        let forged = Short(&shown_one).to_string();
        assert_ne!(forged, shown_one);
        assert_eq!(Short("a…b").to_string(), "a\\u{2026}b");
        let (width_text, width) = Short("a…b").text_and_width();
        assert_eq!((width_text.as_ref(), width), ("a\\u{2026}b", 10));
        // Many long names sharing their ends all show apart.
        let shown: std::collections::HashSet<String> = (0..1000)
            .map(|i| Short(&name(&i.to_string())).to_string())
            .collect();
        assert_eq!(shown.len(), 1000);
    }

    /// A code span cannot be closed, broken across lines or split as a table cell by the value.
    #[test]
    fn markdown_code_spans_hold_any_value() {
        assert_eq!(MdCode::span("a").to_string(), "`a`");
        assert_eq!(MdCode::span("a`b").to_string(), "``a`b``");
        assert_eq!(MdCode::span("``x").to_string(), "``` ``x ```");
        assert_eq!(MdCode::span("").to_string(), "` `");
        assert_eq!(MdCode::span(" a ").to_string(), "`  a  `");
        assert_eq!(MdCode::span("  ").to_string(), "`  `");
        assert_eq!(MdCode::cell("a|b").to_string(), "`a\\|b`");
        assert_eq!(MdCode::span("a|b").to_string(), "`a|b`");
    }

    /// Backslash escapes do not work in a code span, so a span shows a value's backslashes as
    /// they are: a follow-up command copied from the report is the command itself.
    #[test]
    fn markdown_code_spans_show_backslashes_as_they_are() {
        assert_eq!(
            MdCode::span(r#"gh cache delete -- "buildkit-a\\b""#).to_string(),
            r#"`gh cache delete -- "buildkit-a\\b"`"#
        );
        assert_eq!(MdCode::span(r"C:\x\").to_string(), r"`C:\x\`");
        assert_eq!(MdCode::cell(r"a\b|c").to_string(), r"`a\b\|c`");
    }

    /// A value a code span cannot show as it is (a control or invisible character, or `\|` in a
    /// table cell) is escaped Markdown text outside any span: nothing raw reaches the report,
    /// the span cannot be broken, and its escapes cannot be read as the value.
    #[test]
    fn markdown_values_a_code_span_cannot_hold_are_escaped_text() {
        assert_eq!(
            MdCode::span("x`\n# Heading\n[a](http://e)").to_string(),
            "x\\`\\\\n\\# Heading\\\\n\\[a\\]\\(http\\:\\/\\/e\\)"
        );
        assert_eq!(MdCode::span("a\u{202e}b").to_string(), r"a\\u\{202e\}b");
        assert_eq!(MdCode::cell("a\x1b|b").to_string(), r"a\\x1b\|b");
        assert_eq!(MdCode::cell(r"a\|b").to_string(), r"a\\\\\|b");
        assert_eq!(MdCode::span(r"a\|b").to_string(), r"`a\|b`");
        for value in ["a\nb", "\u{200b}", "\x1b[2J"] {
            let shown = MdCode::span(value).to_string();
            assert!(!shown.contains('`'), "{shown}");
            assert!(!shown.chars().any(|c| c != '\\' && needs_escape(c)));
        }
    }

    /// A message that already holds escaped values renders as the terminal shows it: its
    /// backslashes are not doubled again, its controls are escaped once.
    #[test]
    fn markdown_lines_escape_once() {
        assert_eq!(
            MdLine(r"accepted: a\nb\\c").to_string(),
            r"accepted\: a\\nb\\\\c"
        );
        assert_eq!(MdLine("a\nb").to_string(), r"a\\nb");
        assert_eq!(MdLine("`x` *y*").to_string(), r"\`x\` \*y\*");
    }

    /// Markdown text escapes every punctuation character, so nothing in it renders live.
    #[test]
    fn markdown_text_has_nothing_live() {
        assert_eq!(
            MdText("![i](http://e/x.png) # [l](u) <b> *e* |").to_string(),
            "\\!\\[i\\]\\(http\\:\\/\\/e\\/x\\.png\\) \\# \\[l\\]\\(u\\) \\<b\\> \\*e\\* \\|"
        );
        assert_eq!(MdText("a\nb").to_string(), "a\\\\nb");
    }
}
