//! Content that must match its own address: the checksum rules of content-addressed package
//! caches, and the startup hooks Python and npm run on their own. Pure: the walker of a copied
//! mount feeds bytes and digests in.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

/// Which checksum rule a mismatch broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// npm `_cacache/content-v2/<algo>/<hex>`: the blob hashes to its path.
    NpmContent,
    /// Go module cache: `<v>.zip` against `<v>.ziphash` (dirhash `h1:`).
    GoZiphash,
    /// A wheel's files against its `*.dist-info/RECORD`.
    WheelRecord,
    /// A cargo `.crate` against the registry index's `cksum`.
    CargoIndex,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NpmContent => "npm-cacache",
            Self::GoZiphash => "go-ziphash",
            Self::WheelRecord => "wheel-record",
            Self::CargoIndex => "cargo-index",
        }
    }
}

/// One file whose content does not match its address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mismatch {
    /// The file in the mount.
    pub path: Vec<u8>,
    pub rule: Rule,
    /// A member of an archive (a wheel's file), when the mismatch is inside one.
    pub member: Option<String>,
    pub expected: String,
    pub actual: String,
}

/// A digest algorithm npm's cacache addresses content by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpmAlgo {
    Sha512,
    Sha256,
    Sha1,
}

impl NpmAlgo {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha512 => "sha512",
            Self::Sha256 => "sha256",
            Self::Sha1 => "sha1",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha512 => 128,
            Self::Sha256 => 64,
            Self::Sha1 => 40,
        }
    }
}

/// The address of an npm cacache blob: `.../_cacache/content-v2/<algo>/<hex[..2]>/<hex[2..4]>/<hex[4..]>`.
/// `None` for any other path, and for a path under `content-v2` that is no well-formed address
/// of a known algorithm (an unknown algorithm cannot be checked; a malformed name is reported by
/// [`npm_malformed`]).
pub fn npm_address(path: &[u8]) -> Option<(NpmAlgo, String)> {
    let (algo, hex) = npm_parts(path)?;
    let algo = match algo {
        "sha512" => NpmAlgo::Sha512,
        "sha256" => NpmAlgo::Sha256,
        "sha1" => NpmAlgo::Sha1,
        _ => return None,
    };
    (hex.len() == algo.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (algo, hex.to_ascii_lowercase()))
}

/// A file under `_cacache/content-v2/<known algo>/` whose name is no address: content nobody can
/// check, where only content belongs.
pub fn npm_malformed(path: &[u8]) -> bool {
    matches!(npm_parts(path), Some((a, _)) if matches!(a, "sha512" | "sha256" | "sha1"))
        && npm_address(path).is_none()
}

fn npm_parts(path: &[u8]) -> Option<(&str, String)> {
    let path = std::str::from_utf8(path).ok()?;
    let at = path.find("_cacache/content-v2/")?;
    if at > 0 && !path[..at].ends_with('/') {
        return None;
    }
    let rest = &path[at + "_cacache/content-v2/".len()..];
    let (algo, rest) = rest.split_once('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() != 3 {
        return Some((algo, String::new()));
    }
    let hex = parts.concat();
    if parts[0].len() != 2 || parts[1].len() != 2 {
        return Some((algo, String::new()));
    }
    Some((algo, hex))
}

/// Go's `dirhash.Hash1` over a module zip's files, given as (name, SHA-256): the SHA-256 of the
/// sorted lines `"<hex sha256>  <name>\n"`, base64, prefixed `h1:`. `None` when a name holds a
/// newline (Go refuses to hash it).
pub fn go_hash1(files: &[(String, [u8; 32])]) -> Option<String> {
    let mut sorted: Vec<&(String, [u8; 32])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut summary = Sha256::new();
    for (name, digest) in sorted {
        if name.contains('\n') {
            return None;
        }
        summary.update(format!("{}  {name}\n", hex::encode(digest)));
    }
    Some(format!("h1:{}", STANDARD.encode(summary.finalize())))
}

/// A `.ziphash` file's recorded hash: its first line, trimmed.
pub fn parse_ziphash(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Checks a wheel's members, (name, SHA-256), against its `RECORD`. Every member but the
/// RECORD itself (and its signatures) must be listed with a matching `sha256=` hash; every
/// listed file with a hash must be present. Returns (member, expected, actual) per mismatch.
pub fn wheel_record(
    record: &str,
    members: &BTreeMap<String, [u8; 32]>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut listed: BTreeMap<String, Option<String>> = BTreeMap::new();
    for line in record.lines().filter(|l| !l.trim().is_empty()) {
        let fields = csv_fields(line);
        let Some(path) = fields.first() else { continue };
        let hash = fields.get(1).filter(|h| !h.is_empty()).cloned();
        listed.insert(path.clone(), hash);
    }
    for (name, digest) in members {
        let actual = format!("sha256={}", URL_SAFE_NO_PAD.encode(digest));
        match listed.get(name) {
            None if is_record_file(name) => {}
            None => out.push((name.clone(), "listed in RECORD".to_owned(), actual)),
            Some(None) if is_record_file(name) => {}
            Some(None) => out.push((name.clone(), "a hash in RECORD".to_owned(), actual)),
            Some(Some(expected)) => {
                let matches = match expected.split_once('=') {
                    Some(("sha256", b64)) => URL_SAFE_NO_PAD
                        .decode(b64.trim_end_matches('='))
                        .is_ok_and(|d| d == digest),
                    // A hash this check cannot compute: treated as a mismatch, not a pass.
                    _ => false,
                };
                if !matches {
                    out.push((name.clone(), expected.clone(), actual));
                }
            }
        }
    }
    for (name, hash) in &listed {
        if hash.is_some() && !members.contains_key(name) {
            out.push((
                name.clone(),
                hash.clone().unwrap_or_default(),
                "missing".to_owned(),
            ));
        }
    }
    out
}

fn is_record_file(name: &str) -> bool {
    let Some((dir, file)) = name.rsplit_once('/') else {
        return false;
    };
    dir.ends_with(".dist-info")
        && !dir.contains('/')
        && matches!(file, "RECORD" | "RECORD.jws" | "RECORD.p7s")
}

/// The `RECORD` member of a wheel: `<name>.dist-info/RECORD` at the top.
pub fn is_wheel_record(name: &str) -> bool {
    name.rsplit_once('/').is_some_and(|(dir, file)| {
        file == "RECORD" && dir.ends_with(".dist-info") && !dir.contains('/')
    })
}

/// Whether a path is a file of pip's HTTP cache: a response body of pip 23.3 and later
/// (`http-v2/<a>/<b>/<c>/<d>/<e>/<hash>.body`), or a whole serialized response of earlier pips
/// (`http/<a>/<b>/<c>/<d>/<e>/<hash>`). Downloaded wheels live there, not as `.whl` files.
pub fn pip_http_file(path: &[u8]) -> bool {
    let Ok(path) = std::str::from_utf8(path) else {
        return false;
    };
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    if n < 7 {
        return false;
    }
    let fanout = parts[n - 6..n - 1]
        .iter()
        .all(|p| p.len() == 1 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    let file = parts[n - 1];
    match parts[n - 7] {
        "http-v2" => fanout && file.ends_with(".body"),
        "http" => fanout && file.len() > 8 && file.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => false,
    }
}

/// Where the zip Python's `zipfile` opens in a file lies, given the file's last bytes (the
/// 65,558 it searches for an end record) and its length: (offset, length), from past
/// the bytes in front of the archive (which `zipfile` skips by comparing the end record's
/// directory offset with where the directory ends) to the end of the file. `None` when no end
/// record signature is there (`zipfile` opens no zip). An end record `zipfile` would not take
/// as it stands gives the whole file, which the zip reader then refuses.
pub fn zip_in_tail(tail: &[u8], len: u64) -> Option<(u64, u64)> {
    let end = tail.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let whole = Some((0, len));
    let Some(record) = tail.get(end..end + 22) else {
        return whole;
    };
    let size = u32::from_le_bytes([record[12], record[13], record[14], record[15]]) as u64;
    let offset = u32::from_le_bytes([record[16], record[17], record[18], record[19]]) as u64;
    let end_at = len - tail.len() as u64 + end as u64;
    match end_at.checked_sub(size).and_then(|d| d.checked_sub(offset)) {
        Some(front) if front > 0 => Some((front, len - front)),
        _ => whole,
    }
}

/// The version prefix of an older pip's cached response that cachecontrol's v4 serializer
/// writes before a msgpack document.
pub const PIP_CACHE_V4: &[u8] = b"cc=4,";

/// Nesting deeper than this in a cached response is not followed.
const MSGPACK_DEPTH: usize = 64;

/// Where the body of an older pip's cached response lies, reading the msgpack document after
/// [`PIP_CACHE_V4`]: (offset, length) of the `bin` (or `str`) value of `response` -> `body`,
/// relative to the reader's start, the last key winning as in a Python dict. `Ok(None)` when
/// there is none; an error when the document is not msgpack read to its end.
pub fn msgpack_body<R: std::io::Read>(r: R) -> std::io::Result<Option<(u64, u64)>> {
    let mut m = Msgpack {
        r,
        at: 0,
        body: None,
    };
    m.value(0, Place::Root)?;
    let mut extra = [0u8; 1];
    if m.r.read(&mut extra)? != 0 {
        return Err(bad_msgpack("data after the document"));
    }
    Ok(m.body)
}

fn bad_msgpack(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("not a cached response this reads: {what}"),
    )
}

/// Where a msgpack value sits in a cached response.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Root,
    Response,
    Body,
    Other,
}

struct Msgpack<R> {
    r: R,
    at: u64,
    body: Option<(u64, u64)>,
}

impl<R: std::io::Read> Msgpack<R> {
    fn bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.r.read_exact(&mut b)?;
        self.at += n as u64;
        Ok(b)
    }

    fn uint(&mut self, n: usize) -> std::io::Result<u64> {
        Ok(self
            .bytes(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let got = std::io::copy(
            &mut std::io::Read::take(&mut self.r, n),
            &mut std::io::sink(),
        )?;
        if got != n {
            return Err(bad_msgpack("cut off"));
        }
        self.at += n;
        Ok(())
    }

    /// Reads one value; returns the bytes of a short `str` (a map key).
    fn value(&mut self, depth: usize, place: Place) -> std::io::Result<Option<Vec<u8>>> {
        if depth > MSGPACK_DEPTH {
            return Err(bad_msgpack("nested too deep"));
        }
        if place == Place::Response {
            // A later `response` replaces an earlier one, body and all.
            self.body = None;
        }
        let tag = self.bytes(1)?[0];
        let (len, kind) = match tag {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 'n'),
            0x80..=0x8f => ((tag & 0x0f) as u64, 'm'),
            0x90..=0x9f => ((tag & 0x0f) as u64, 'a'),
            0xa0..=0xbf => ((tag & 0x1f) as u64, 's'),
            0xc4 | 0xd9 => (self.uint(1)?, if tag == 0xc4 { 'b' } else { 's' }),
            0xc5 | 0xda => (self.uint(2)?, if tag == 0xc5 { 'b' } else { 's' }),
            0xc6 | 0xdb => (self.uint(4)?, if tag == 0xc6 { 'b' } else { 's' }),
            0xc7 => (self.uint(1)? + 1, 'x'),
            0xc8 => (self.uint(2)? + 1, 'x'),
            0xc9 => (self.uint(4)? + 1, 'x'),
            0xca => (4, 'x'),
            0xcb => (8, 'x'),
            0xcc..=0xcf => (1 << (tag - 0xcc), 'x'),
            0xd0..=0xd3 => (1 << (tag - 0xd0), 'x'),
            0xd4..=0xd8 => ((1 << (tag - 0xd4)) + 1, 'x'),
            0xdc => (self.uint(2)?, 'a'),
            0xdd => (self.uint(4)?, 'a'),
            0xde => (self.uint(2)?, 'm'),
            0xdf => (self.uint(4)?, 'm'),
            0xc1 => return Err(bad_msgpack("byte 0xc1")),
        };
        if place == Place::Body {
            self.body = matches!(kind, 'b' | 's').then_some((self.at, len));
        }
        match kind {
            'm' => {
                for _ in 0..len {
                    let key = self.value(depth + 1, Place::Other)?;
                    let child = match (place, key.as_deref()) {
                        (Place::Root, Some(b"response")) => Place::Response,
                        (Place::Response, Some(b"body")) => Place::Body,
                        _ => Place::Other,
                    };
                    self.value(depth + 1, child)?;
                }
            }
            'a' => {
                for _ in 0..len {
                    self.value(depth + 1, Place::Other)?;
                }
            }
            's' if len <= 16 => return self.bytes(len as usize).map(Some),
            _ => self.skip(len)?,
        }
        Ok(None)
    }
}

/// One CSV line (RFC 4180 quoting, as Python's `csv` module writes RECORD).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The checksums a cargo registry index cache file lists: `<name>-<vers>.crate` -> `cksum`
/// (hex SHA-256). The file holds a binary header and NUL-separated version and JSON entries;
/// any JSON object with `name`, `vers` and `cksum` is taken, anything else ignored.
pub fn cargo_index_checksums(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in bytes.split(|b| *b == 0) {
        let Some(start) = part.iter().position(|b| *b == b'{') else {
            continue;
        };
        let Ok(entry) = serde_json::from_slice::<serde_json::Value>(&part[start..]) else {
            continue;
        };
        if let (Some(name), Some(vers), Some(cksum)) = (
            entry["name"].as_str(),
            entry["vers"].as_str(),
            entry["cksum"].as_str(),
        ) && !name.contains('/')
            && !vers.contains('/')
        {
            out.insert(format!("{name}-{vers}.crate"), cksum.to_ascii_lowercase());
        }
    }
    out
}

/// For a path in a cargo home, the (prefix, index directory) its registry files share:
/// `<p>cache/<dir>/<file>.crate` and `<p>index/<dir>/.cache/...` give the same key.
pub fn cargo_crate_key(path: &[u8]) -> Option<(String, String, String)> {
    let path = std::str::from_utf8(path).ok()?;
    let (dir_path, file) = path.rsplit_once('/')?;
    if !file.ends_with(".crate") {
        return None;
    }
    let (prefix, dir) = dir_path.rsplit_once('/')?;
    let prefix = prefix.strip_suffix("cache")?;
    (prefix.is_empty() || prefix.ends_with('/'))
        .then(|| (prefix.to_owned(), dir.to_owned(), file.to_owned()))
}

/// The index cache key of a cargo registry index file: `<p>index/<dir>/.cache/...`.
pub fn cargo_index_key(path: &[u8]) -> Option<(String, String)> {
    let path = std::str::from_utf8(path).ok()?;
    let at = path.find("index/")?;
    let prefix = &path[..at];
    if !(prefix.is_empty() || prefix.ends_with('/')) {
        return None;
    }
    let rest = &path[at + "index/".len()..];
    let (dir, rest) = rest.split_once('/')?;
    rest.starts_with(".cache/")
        .then(|| (prefix.to_owned(), dir.to_owned()))
}

/// The npm lifecycle scripts that run on install, named in a `package.json`.
pub const NPM_INSTALL_SCRIPTS: [&str; 4] = ["preinstall", "install", "postinstall", "prepare"];

/// The install-time lifecycle scripts a `package.json` declares, read as npm reads it
/// (`json-parse-even-better-errors`: the bytes as UTF-8 with replacement, a leading BOM
/// dropped, then `JSON.parse`, which takes unpaired surrogate escapes, numbers past `f64` and
/// any depth). A file this reader still cannot parse is an error (the parser's, naming no
/// content): its scripts are unknown, never none. Duplicate keys: the last wins, as in `JSON.parse`.
pub fn npm_lifecycle_scripts(package_json: &[u8]) -> Result<Vec<String>, String> {
    use serde::Deserialize as _;
    let text = String::from_utf8_lossy(package_json);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let text = lone_surrogates_replaced(text);
    let mut de = serde_json::Deserializer::from_str(&text);
    let scripts = npm_json::Top::deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top.0))
        .map_err(|e| e.to_string())?;
    Ok(NPM_INSTALL_SCRIPTS
        .iter()
        .filter(|s| scripts.get(**s) == Some(&true))
        .map(|s| (*s).to_owned())
        .collect())
}

/// JSON text with every `\uXXXX` escape of an unpaired surrogate (which `JSON.parse` keeps
/// and serde_json refuses) turned into `\ufffd`: a string stays a string, and no key becomes
/// an install script's name.
fn lone_surrogates_replaced(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let escape = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 6)?;
        if &hex[..2] != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let high = |c: u16| (0xd800..0xdc00).contains(&c);
    let low = |c: u16| (0xdc00..0xe000).contains(&c);
    let mut out = String::new();
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                in_string = !in_string;
                i += 1;
            }
            b'\\' if in_string => match escape(i) {
                Some(c) if high(c) && escape(i + 6).is_some_and(low) => i += 12,
                Some(c) if high(c) || low(c) => {
                    out.push_str(&text[copied..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    copied = i;
                }
                _ => i += 2,
            },
            _ => i += 1,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied.min(text.len())..]);
    std::borrow::Cow::Owned(out)
}

/// A `package.json` read only for `scripts`: everything else is skipped without building
/// it (serde_json skips iteratively, so nesting depth is no limit there).
mod npm_json {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// The top level: `scripts` of an object (the last one), each name to whether its value
    /// is a string; anything else has none.
    pub struct Top(pub BTreeMap<String, bool>);

    /// Whether a value is a string.
    struct IsString(bool);

    /// `scripts`: an object's names to [`IsString`]; anything else declares none.
    struct Scripts(BTreeMap<String, bool>);

    macro_rules! scalars {
        ($value:expr) => {
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok($value)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok($value)
            }
        };
    }

    struct TopVisitor;

    impl<'de> Visitor<'de> for TopVisitor {
        type Value = Top;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }

        scalars!(Top(BTreeMap::new()));

        fn visit_str<E>(self, _: &str) -> Result<Top, E> {
            Ok(Top(BTreeMap::new()))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
            let mut scripts = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if key == "scripts" {
                    scripts = map.next_value::<Scripts>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Top(scripts))
        }
    }

    impl<'de> Deserialize<'de> for Top {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(TopVisitor)
        }
    }

    struct ScriptsVisitor;

    impl<'de> Visitor<'de> for ScriptsVisitor {
        type Value = Scripts;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }

        scalars!(Scripts(BTreeMap::new()));

        fn visit_str<E>(self, _: &str) -> Result<Scripts, E> {
            Ok(Scripts(BTreeMap::new()))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scripts, A::Error> {
            let mut scripts = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value::<IsString>()?;
                scripts.insert(key, value.0);
            }
            Ok(Scripts(scripts))
        }
    }

    impl<'de> Deserialize<'de> for Scripts {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScriptsVisitor)
        }
    }

    struct IsStringVisitor;

    impl<'de> Visitor<'de> for IsStringVisitor {
        type Value = IsString;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }

        scalars!(IsString(false));

        fn visit_str<E>(self, _: &str) -> Result<IsString, E> {
            Ok(IsString(true))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsString, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(IsString(false))
        }
    }

    impl<'de> Deserialize<'de> for IsString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(IsStringVisitor)
        }
    }
}

/// Whether a file is a Python startup hook: `sitecustomize.py`, `usercustomize.py` or a
/// `.pth` file, which the interpreter runs (or imports) at start-up where it lands.
pub fn python_startup_hook(path: &[u8]) -> Option<&'static str> {
    let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    match name {
        b"sitecustomize.py" => Some("sitecustomize.py"),
        b"usercustomize.py" => Some("usercustomize.py"),
        n if n.len() > 4 && n.ends_with(b".pth") => Some(".pth file"),
        _ => None,
    }
}

/// The startup hook a wheel member becomes once pip installs it, given its name as pip reads
/// it ([`crate::audit::mounts::zip::Member::pip_name`]). pip takes a member whose first
/// component ends in `.data` (`.data` itself too) as `<dir>/<scheme>/<path>` of the
/// POSIX-normalised name, and any other member as a path under site-packages, normalised
/// (`a/../x.pth` is `x.pth`). Hooks are `sitecustomize.py`, `usercustomize.py` and `.pth` files
/// that land in site-packages itself: at the root, directly under the `purelib` or `platlib`
/// scheme, or anywhere under the `data` scheme (the environment's prefix, which holds
/// site-packages at a depth that depends on the Python version). Deeper down, none is read at
/// start-up.
pub fn wheel_site_hook(member: &str) -> Option<&'static str> {
    let parts = posix_normpath(member);
    let hook = python_startup_hook(parts.last()?.as_bytes())?;
    if parts[0] == ".." {
        // pip refuses a path out of its scheme directory.
        return None;
    }
    let data_scheme = member
        .split('/')
        .next()
        .is_some_and(|c| c.ends_with(".data"));
    if !data_scheme {
        return (parts.len() == 1).then_some(hook);
    }
    match parts.as_slice() {
        [_, "purelib" | "platlib", _file] => Some(hook),
        [_, "data", _, ..] => Some(hook),
        _ => None,
    }
}

/// A path's components as Python's `posixpath.normpath` leaves them: empty and `.` components
/// dropped, `..` taking the one before it away (kept at the start); a leading `/` is kept as an
/// empty first component.
fn posix_normpath(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    if path.starts_with('/') {
        out.push("");
    }
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| *l != ".." && !l.is_empty()) => {
                out.pop();
            }
            ".." if out.first() == Some(&"") => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether a path is a `package.json`.
pub fn is_package_json(path: &[u8]) -> bool {
    path == b"package.json" || path.ends_with(b"/package.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// An npm blob is addressed by its algorithm and hex digest split 2/2/rest; other paths
    /// and unknown algorithms are not addresses.
    #[test]
    fn npm_addresses_are_read_from_the_path() {
        let hex512 = "ab".repeat(64);
        let path = format!("_cacache/content-v2/sha512/ab/ab/{}", &hex512[4..]);
        assert_eq!(
            npm_address(path.as_bytes()),
            Some((NpmAlgo::Sha512, hex512.clone()))
        );
        let nested = format!(
            "x/_cacache/content-v2/sha1/{}/{}/{}",
            "0a",
            "0b",
            "c".repeat(36)
        );
        assert_eq!(npm_address(nested.as_bytes()).unwrap().0, NpmAlgo::Sha1);
        assert_eq!(npm_address(b"_cacache/index-v5/ab/cd/ef"), None);
        assert_eq!(npm_address(b"my_cacache/content-v2/sha1/0a/0b/cc"), None);
        assert!(npm_malformed(b"_cacache/content-v2/sha512/ab/ab/short"));
        assert!(npm_malformed(b"_cacache/content-v2/sha512/evil.js"));
        assert!(!npm_malformed(b"_cacache/content-v2/md5/ab/cd/ef"));
    }

    /// Go's h1 hash is dirhash.Hash1: Go's own test vector (files "xyz" and "abc" holding
    /// "data for " + name), pinned from a second implementation (Python's hashlib).
    #[test]
    fn go_hash1_is_dirhash() {
        let files = vec![
            ("xyz".to_owned(), sha(b"data for xyz")),
            ("abc".to_owned(), sha(b"data for abc")),
        ];
        assert_eq!(
            go_hash1(&files).as_deref(),
            Some("h1:EP6WfDoQTSk9klnxcjriWJOGztueJUywHNmWeq+efB8=")
        );
        assert_eq!(
            go_hash1(&[("a\nb".to_owned(), sha(b""))]),
            None,
            "Go refuses newlines in names"
        );
        assert_eq!(parse_ziphash(b"h1:abc=\n"), "h1:abc=");
    }

    /// A wheel member that differs from RECORD, one RECORD does not list, and one RECORD lists
    /// but the wheel lacks are each reported; RECORD itself needs no hash.
    #[test]
    fn wheel_members_are_checked_against_record() {
        let good = sha(b"print('ok')\n");
        let record = format!(
            "pkg/__init__.py,sha256={},12\n\"pkg/a,b.py\",sha256={},1\npkg/gone.py,sha256={},1\npkg-1.0.dist-info/RECORD,,\n",
            URL_SAFE_NO_PAD.encode(good),
            URL_SAFE_NO_PAD.encode(sha(b"x")),
            URL_SAFE_NO_PAD.encode(sha(b"y")),
        );
        let mut members = BTreeMap::new();
        members.insert("pkg/__init__.py".to_owned(), good);
        members.insert("pkg/a,b.py".to_owned(), sha(b"tampered"));
        members.insert("pkg/extra.pth".to_owned(), sha(b"import evil"));
        members.insert(
            "pkg-1.0.dist-info/RECORD".to_owned(),
            sha(record.as_bytes()),
        );
        let bad: Vec<String> = wheel_record(&record, &members)
            .into_iter()
            .map(|(m, _, _)| m)
            .collect();
        assert_eq!(bad, vec!["pkg/a,b.py", "pkg/extra.pth", "pkg/gone.py"]);
        assert!(is_wheel_record("pkg-1.0.dist-info/RECORD"));
        assert!(!is_wheel_record("x/pkg-1.0.dist-info/RECORD"));
    }

    /// The index cache's NUL-separated JSON entries give each `.crate` file its checksum, and
    /// crate and index paths of one registry share a key.
    #[test]
    fn cargo_checksums_come_from_the_index_cache() {
        let mut bytes = vec![3u8, 2, 0, 0, 0];
        bytes.extend_from_slice(b"etag\0");
        bytes.extend_from_slice(
            b"1.0.0\0{\"name\":\"serde\",\"vers\":\"1.0.0\",\"deps\":[],\"cksum\":\"ABCD\"}\0",
        );
        bytes.extend_from_slice(b"1.0.1\0not json\0");
        let sums = cargo_index_checksums(&bytes);
        assert_eq!(
            sums.get("serde-1.0.0.crate").map(String::as_str),
            Some("abcd")
        );
        assert_eq!(sums.len(), 1);
        assert_eq!(
            cargo_crate_key(b"registry/cache/index.crates.io-1949cf8c6b5b557f/serde-1.0.0.crate"),
            Some((
                "registry/".to_owned(),
                "index.crates.io-1949cf8c6b5b557f".to_owned(),
                "serde-1.0.0.crate".to_owned()
            ))
        );
        assert_eq!(
            cargo_index_key(b"registry/index/index.crates.io-1949cf8c6b5b557f/.cache/se/rd/serde"),
            Some((
                "registry/".to_owned(),
                "index.crates.io-1949cf8c6b5b557f".to_owned()
            ))
        );
    }

    /// Startup hooks are named by file name, and npm install scripts are read from JSON.
    #[test]
    fn startup_hooks_are_recognised() {
        assert_eq!(
            python_startup_hook(b"a/sitecustomize.py"),
            Some("sitecustomize.py")
        );
        assert_eq!(python_startup_hook(b"evil.pth"), Some(".pth file"));
        assert_eq!(python_startup_hook(b"x.pth.txt"), None);
        assert_eq!(
            npm_lifecycle_scripts(br#"{"scripts":{"postinstall":"node x","test":"t"}}"#),
            Ok(vec!["postinstall".to_owned()])
        );
        assert!(npm_lifecycle_scripts(b"not json").is_err());
    }

    /// A package.json npm reads is read here too, hooks included: a BOM, unpaired surrogate
    /// escapes, a number past `f64`, nesting past serde_json's limit, invalid UTF-8; the last
    /// `scripts` wins; what still does not parse is an error (scripts unknown), never none.
    #[test]
    fn package_json_is_read_as_npm_reads_it() {
        let hooked = |json: &[u8]| npm_lifecycle_scripts(json);
        let post = Ok(vec!["postinstall".to_owned()]);
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        for json in [
            b"\xef\xbb\xbf{\"scripts\":{\"postinstall\":\"x\"}}".to_vec(),
            br#"{"a":"\ud800","scripts":{"postinstall":"\udc00x\ud800"}}"#.to_vec(),
            br#"{"\ud800\\":1,"scripts":{"postinstall":"\ud83d\ude00 \\ud800"}}"#.to_vec(),
            br#"{"n":1e400,"scripts":{"postinstall":"x"}}"#.to_vec(),
            format!(r#"{{"deep":{deep},"scripts":{{"postinstall":"x","z":{deep}}}}}"#).into_bytes(),
            b"{\"d\":\"\xff\xfe\",\"scripts\":{\"postinstall\":\"\xc0x\"}}".to_vec(),
            br#"{"scripts":{},"scripts":{"postinstall":"a","postinstall":"b"}}"#.to_vec(),
        ] {
            assert_eq!(hooked(&json), post, "{}", String::from_utf8_lossy(&json));
        }
        for clean in [
            &br#"{"scripts":{"postinstall":"x"},"scripts":{}}"#[..],
            br#"{"scripts":{"postinstall":1,"install":["x"],"prepare":null}}"#,
            br#"[{"scripts":{"postinstall":"x"}}]"#,
            br#""scripts""#,
            br#"{"scripts":"postinstall"}"#,
        ] {
            assert_eq!(
                hooked(clean),
                Ok(vec![]),
                "{}",
                String::from_utf8_lossy(clean)
            );
        }
        for broken in [
            &b""[..],
            b"{",
            br#"{"scripts":{}} x"#,
            b"\xef\xbb\xbf\xef\xbb\xbf{}",
        ] {
            assert!(
                hooked(broken).is_err(),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    /// An older pip's cached response gives its body where a Python dict would: under
    /// `response` -> `body`, the last key winning (a later `response` without a body has
    /// none); a document not read to its end, or with trailing bytes, is an error.
    #[test]
    fn cached_response_bodies_are_placed_as_python_reads_them() {
        let read = |b: &[u8]| msgpack_body(b).map_err(|e| e.to_string());
        assert_eq!(
            read(b"\x81\xa8response\x81\xa4body\xc4\x02PK"),
            Ok(Some((18, 2)))
        );
        assert_eq!(
            read(b"\x81\xa8response\x82\xa4body\xc4\x01A\xa4body\xa2PK"),
            Ok(Some((25, 2)))
        );
        assert_eq!(
            read(b"\x82\xa8response\x81\xa4body\xc4\x01A\xa8response\x80"),
            Ok(None)
        );
        assert_eq!(read(b"\x81\xa8response\x81\xa4body\x01"), Ok(None));
        assert_eq!(read(b"\x81\xa4vary\x92\xcb\0\0\0\0\0\0\0\0\xc0"), Ok(None));
        assert!(read(b"\x81\xa8response\x81\xa4body\xc4\x09PK").is_err());
        assert!(read(b"\x80\x80").is_err());
        assert!(read(&[0x91; 100]).is_err());
    }

    /// The zip `zipfile` finds in a file with bytes in front of it starts past them; a file
    /// without an end record signature holds none; a record that does not fit gives the whole
    /// file (refused by the zip reader).
    #[test]
    fn a_zip_is_found_from_its_end_record() {
        let zip = crate::audit::mounts::zip::stored_zip(&[("a", b"x")]);
        let mut junk = b"0123456789".to_vec();
        junk.extend_from_slice(&zip);
        let len = junk.len() as u64;
        assert_eq!(zip_in_tail(&junk, len), Some((10, zip.len() as u64)));
        assert_eq!(zip_in_tail(&junk[5..], len), Some((10, zip.len() as u64)));
        assert_eq!(
            zip_in_tail(&zip, zip.len() as u64),
            Some((0, zip.len() as u64))
        );
        assert_eq!(zip_in_tail(b"no zip here", 11), None);
        assert_eq!(zip_in_tail(b"..PK\x05\x06..", 10), Some((0, 10)));
    }

    /// Wheel members that pip puts in site-packages (the root, `*.data/purelib/`,
    /// `*.data/platlib/`) are hooks when Python runs them at start-up; nested ones are not.
    #[test]
    fn wheel_members_in_site_packages_are_hooks() {
        assert_eq!(wheel_site_hook("evil.pth"), Some(".pth file"));
        assert_eq!(wheel_site_hook("./evil.pth"), Some(".pth file"));
        assert_eq!(
            wheel_site_hook("sitecustomize.py"),
            Some("sitecustomize.py")
        );
        assert_eq!(
            wheel_site_hook("usercustomize.py"),
            Some("usercustomize.py")
        );
        assert_eq!(
            wheel_site_hook("p-1.0.data/purelib/hook.pth"),
            Some(".pth file")
        );
        assert_eq!(
            wheel_site_hook("p-1.0.data/platlib/sitecustomize.py"),
            Some("sitecustomize.py")
        );
        assert_eq!(wheel_site_hook("p/evil.pth"), None);
        assert_eq!(wheel_site_hook("p-1.0.data/scripts/x.pth"), None);
        assert_eq!(wheel_site_hook("p-1.0.data/purelib/p/x.pth"), None);
        assert_eq!(wheel_site_hook("p-1.0.data/headers/x.pth"), None);
        assert_eq!(wheel_site_hook("../x.pth"), None);
        assert_eq!(wheel_site_hook("/x.pth"), None);
        assert_eq!(wheel_site_hook("p.py"), None);
        assert_eq!(wheel_site_hook("p-1.0.dist-info/RECORD"), None);
    }

    /// Names pip normalises into site-packages are hooks: `..` components, a bare `.data`
    /// directory, the `data` scheme (the prefix, holding `lib/python3.X/site-packages`), and a
    /// `.data` path whose scheme a `..` moves.
    #[test]
    fn wheel_members_are_classified_as_pip_installs_them() {
        assert_eq!(wheel_site_hook("a/../evil1.pth"), Some(".pth file"));
        assert_eq!(wheel_site_hook("a//b/../../evil1.pth"), Some(".pth file"));
        assert_eq!(wheel_site_hook("evil.pth/."), Some(".pth file"));
        assert_eq!(
            wheel_site_hook(".data/purelib/evil2.pth"),
            Some(".pth file")
        );
        assert_eq!(
            wheel_site_hook("p-1.0.data/data/lib/python3.12/site-packages/evil3.pth"),
            Some(".pth file")
        );
        assert_eq!(
            wheel_site_hook("p-1.0.data/./platlib/x/../sitecustomize.py"),
            Some("sitecustomize.py")
        );
        assert_eq!(
            wheel_site_hook("p-1.0.data/../q/purelib/evil.pth"),
            Some(".pth file")
        );
        assert_eq!(wheel_site_hook("p/x/../evil.pth"), None);
    }
}
