//! Just enough of the tar format to walk a mount's copy as one stream: ustar and GNU headers,
//! GNU long names and links, pax `path`/`linkpath`/`size` records. Names are bytes from the
//! builder: they never become paths on this machine.
//!
//! npm package tarballs are read as node-tar (npm's unpacker) reads them ([`npm_entries`]):
//! wherever node-tar and this reader could part ways on where an entry starts or what it is
//! called, the tarball is refused (read as not read to its end), never guessed at.

use std::io::{self, Read};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Directory,
    /// A device or FIFO: recorded by its type bits, no content.
    Special(u32),
}

/// One entry's header, with the names extensions gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Relative to the archive root, without a leading `./`.
    pub path: Vec<u8>,
    /// The name as the headers give it, before `./` and trailing `/` are removed.
    pub raw_path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, with the type bits of [`Kind`].
    pub mode: u32,
    pub size: u64,
    pub link: Vec<u8>,
    /// Where the content starts in the archive.
    pub offset: u64,
}

/// Entries bigger than this in an extension header (a long name, pax records) are refused.
const EXTENSION_LIMIT: u64 = 1 << 20;

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a readable tar: {what}"),
    )
}

fn octal(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian after the marker bit.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v.checked_mul(256).ok_or_else(|| bad("size overflows"))? | *b as u64;
        }
        return Ok(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).unwrap_or("0"), 8)
        .map_err(|_| bad("numeric field"))
}

/// What node-tar (npm's unpacker) makes of a header block's numbers.
struct NodeHeader {
    /// An end block to node-tar: no checksum number, and nothing else in the block.
    null_block: bool,
    /// `None` too when node-tar would throw on a field (base-256 it cannot read) and skip
    /// the block.
    cksum: Option<i64>,
    /// What node-tar unpacks: a negative or unreadable size is none.
    size: Option<u64>,
    mode: Option<i64>,
}

/// Reads a header's numbers as node-tar's `Header` does: `cksum` from 12 bytes at 148, sizes
/// and modes through [`node_number`]; every numeric field it decodes can throw.
fn node_header(block: &[u8; 512]) -> NodeHeader {
    let mut fields: Vec<(usize, usize)> = vec![
        (100, 8),
        (108, 8),
        (116, 8),
        (124, 12),
        (136, 12),
        (148, 12),
    ];
    if &block[257..265] == b"ustar\x0000" {
        fields.extend([(329, 8), (337, 8)]);
        if block[475] == 0 {
            fields.extend([(476, 12), (488, 12)]);
        }
    }
    let mut rejected = false;
    for (at, len) in fields {
        if node_number(&block[at..at + len]).is_err() {
            rejected = true;
        }
    }
    let read = |at: usize, len: usize| node_number(&block[at..at + len]).ok().flatten();
    let cksum = read(148, 12);
    let rest: u64 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| *b as u64)
        .sum();
    let size = match read(124, 12) {
        Some(n) if n >= 0 => Some(n as u64),
        _ => None,
    };
    // node-tar takes a directory's size as 0 whatever it says, which is what this reader
    // gives it too once the sizes agree; a difference is refused before that matters.
    NodeHeader {
        null_block: !rejected && cksum.is_none() && rest == 0,
        cksum: if rejected { None } else { cksum },
        size,
        mode: read(100, 8),
    }
}

/// node-tar's `decNumber`: base-256 when the high bit is set (only `0x80` and `0xff` leads,
/// within JavaScript's safe integers, else it throws); otherwise the text up to a NUL that no
/// line break follows, then `parseInt(.., 8)`: leading JavaScript whitespace, an optional
/// sign, octal digits up to the first other character. `None` is its `undefined`.
fn node_number(field: &[u8]) -> Result<Option<i64>, ()> {
    const SAFE: i128 = (1 << 53) - 1;
    if field[0] & 0x80 != 0 {
        let value = match field[0] {
            0x80 => field[1..]
                .iter()
                .try_fold(0i128, |v, b| v.checked_mul(256).map(|v| v | *b as i128)),
            0xff => {
                // Two's complement over the whole field.
                let mut v: i128 = -1;
                let mut ok = true;
                for b in field {
                    match v.checked_mul(256) {
                        Some(m) => v = m | *b as i128,
                        None => ok = false,
                    }
                }
                ok.then_some(v)
            }
            _ => None,
        };
        return match value {
            Some(v) if (-SAFE..=SAFE).contains(&v) => Ok(Some(v as i64)),
            _ => Err(()),
        };
    }
    let text = String::from_utf8_lossy(field);
    let breaks = ['\n', '\r', '\u{2028}', '\u{2029}'];
    // `/\0.*$/`: `.` stops at line breaks, so only a NUL with none after it cuts.
    let cut = text
        .char_indices()
        .find(|(i, c)| *c == '\0' && !text[i + 1..].contains(breaks))
        .map_or(text.len(), |(i, _)| i);
    let text = text[..cut].trim_start_matches(js_space);
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits: String = digits
        .chars()
        .take_while(|c| ('0'..='7').contains(c))
        .collect();
    if digits.is_empty() {
        return Ok(None);
    }
    // At most 12 digits: well inside an i64.
    let value = i64::from_str_radix(&digits, 8).map_err(|_| ())?;
    Ok(Some(if negative { -value } else { value }))
}

/// JavaScript's `trim` whitespace: `WhiteSpace` (with U+FEFF and every `Zs`) and
/// `LineTerminator`; not U+0085, which Rust counts.
fn js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A reader that counts what it read, so entries know their offsets.
struct Counting<R> {
    inner: R,
    at: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(bad("truncated"));
    }
    Ok(())
}

fn read_extension(r: &mut impl Read, size: u64) -> io::Result<Vec<u8>> {
    if size > EXTENSION_LIMIT {
        return Err(bad("extension header too large"));
    }
    let mut data = vec![0; size as usize];
    r.read_exact(&mut data)?;
    skip(r, (512 - size % 512) % 512)?;
    Ok(data)
}

/// Calls `each` with every entry (directories included) and a reader of its content; what
/// `each` leaves unread is skipped. Entries whose name has a `..` component are skipped.
pub fn entries<R: Read>(
    reader: R,
    each: impl FnMut(&Header, &mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    walk(reader, false, each)
}

/// [`entries`] as node-tar reads an npm package tarball: a block whose checksum fails is
/// skipped, not an error (node-tar warns and reads the next block as a header); entries named
/// with `..` are passed on too (npm strips the first component before node-tar refuses `..`);
/// a stream that ends before any header is an empty archive (a packument, not a tarball). And
/// it refuses what node-tar versions read differently from this reader: a pax global header
/// setting `size`, `path` or `linkpath`; pax records that are not one clean line each; a pax
/// `size` that is not decimal; an entry without a name; a link without a target or a file
/// with one; a link or device declaring content; a checksum, size or mode node-tar's number
/// parsing reads otherwise (or a block it skips or ends on that this reader would not); a
/// pax `x` header followed by another extension header (node-tar 6 applies it to that one).
pub fn npm_entries<R: Read>(
    reader: R,
    each: impl FnMut(&Header, &mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    walk(reader, true, each)
}

fn walk<R: Read>(
    reader: R,
    npm: bool,
    mut each: impl FnMut(&Header, &mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = Counting {
        inner: reader,
        at: 0,
    };
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut global_size: Option<u64> = None;
    // A pax `x` header waits for its entry: node-tar 6 (npm 10) applies its records (`size`
    // too) to a GNU long name or link, or another extension header, in between; 7 does not.
    let mut pending_pax = false;
    let mut headers = 0usize;
    loop {
        let mut block = [0u8; 512];
        match r.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && npm && headers == 0 => {
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && r.at % 512 == 0 => {
                return Err(bad("no end-of-archive marker"));
            }
            Err(e) => return Err(e),
        }
        if block.iter().all(|b| *b == 0) {
            // The end is two zero blocks in a row. A lone one is skipped, as node-tar (npm's
            // unpacker) skips it: an entry after it is still unpacked, so it is still read.
            match r.read_exact(&mut block) {
                Ok(()) if block.iter().all(|b| *b == 0) => return Ok(()),
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && r.at % 512 == 0 => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u64
                }
            })
            .sum();
        let strict_valid = octal(&block[148..156]).ok() == Some(sum);
        if npm {
            // node-tar reads the checksum from 12 bytes (into the type flag and link name)
            // and its own way: where that reading and this one part, the tarball is refused.
            let node = node_header(&block);
            if node.null_block {
                return Err(bad("a block node-tar reads as an end block"));
            }
            let node_valid = node.cksum == Some(sum as i64);
            match (node_valid, strict_valid) {
                // node-tar warns and reads the next block as a header.
                (false, false) => continue,
                (true, true) => {}
                _ => return Err(bad("a header checksum node-tar reads differently")),
            }
            let size = octal(&block[124..136]).ok();
            if node.size.unwrap_or(0) != size.unwrap_or(u64::MAX) {
                return Err(bad("an entry size node-tar reads differently"));
            }
            let mode = octal(&block[100..108]).ok();
            if node.mode != mode.map(|m| m as i64) {
                return Err(bad("an entry mode node-tar reads differently"));
            }
        } else if !strict_valid {
            return Err(bad("header checksum"));
        }
        headers += 1;
        let size = octal(&block[124..136])?;
        let flag = block[156];
        if npm && pending_pax && matches!(flag, b'L' | b'K' | b'x' | b'g') {
            return Err(bad("an extension header after a pax `x` header"));
        }
        match flag {
            b'L' => {
                long_name = Some(cstr(&read_extension(&mut r, size)?).to_vec());
                continue;
            }
            b'K' => {
                long_link = Some(cstr(&read_extension(&mut r, size)?).to_vec());
                continue;
            }
            b'x' => {
                let data = read_extension(&mut r, size)?;
                let (records, clean) = pax_records(&data);
                if npm && !clean {
                    return Err(bad("pax records node-tar reads differently"));
                }
                for (key, value) in records {
                    let value = cstr(value);
                    match key {
                        b"path" => long_name = Some(value.to_vec()),
                        b"linkpath" => long_link = Some(value.to_vec()),
                        b"size" => pax_size = Some(decimal(value, npm)?),
                        _ => {}
                    }
                }
                pending_pax = true;
                continue;
            }
            b'g' => {
                let data = read_extension(&mut r, size)?;
                let (records, clean) = pax_records(&data);
                if npm && !clean {
                    return Err(bad("pax records node-tar reads differently"));
                }
                for (key, value) in records {
                    match key {
                        // node-tar versions differ on which global records apply to later
                        // entries: a tarball that sets these is not guessed at.
                        b"path" | b"linkpath" | b"size" if npm => {
                            return Err(bad(
                                "a pax global header sets `path`, `linkpath` or `size`",
                            ));
                        }
                        b"size" => global_size = Some(decimal(cstr(value), npm)?),
                        _ => {}
                    }
                }
                continue;
            }
            _ => {}
        }
        pending_pax = false;
        let from_extension = long_name.is_some();
        let mut name = match long_name.take() {
            Some(n) => n,
            None => cstr(&block[0..100]).to_vec(),
        };
        // node-tar (like GNU tar) takes an old-style file whose name ends in `/` for a
        // directory, with no content.
        let dir_by_name = matches!(block[156], b'0' | 0) && name.ends_with(b"/");
        if &block[257..265] == b"ustar\x0000" {
            // The prefix field is only one in POSIX ustar (`ustar\0` `00`, as node-tar reads
            // it); GNU headers keep times there. Past 130 bytes it is the whole field.
            let long = block[475] != 0;
            let prefix = if long {
                cstr(&block[345..500])
            } else {
                cstr(&block[345..475])
            };
            let has_prefix = long || !prefix.is_empty();
            if from_extension && has_prefix && npm {
                // node-tar puts it before a long name too; other readers do not.
                return Err(bad("a ustar prefix beside a long name"));
            }
            if !from_extension && has_prefix {
                name = [prefix, b"/", &name].concat();
            }
        }
        let link = long_link
            .take()
            .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
        let size = pax_size.take().or(global_size).unwrap_or(size);
        let raw_path = name.clone();
        while name.starts_with(b"./") {
            name.drain(..2);
        }
        while name.ends_with(b"/") {
            name.pop();
        }
        let perm = (octal(&block[100..108])? & 0o7777) as u32;
        let (kind, type_bits) = match flag {
            _ if dir_by_name => (Kind::Directory, 0o040000),
            b'0' | 0 | b'7' => (Kind::File, 0o100000),
            b'1' => (Kind::HardLink, 0o100000),
            b'2' => (Kind::Symlink, 0o120000),
            b'5' => (Kind::Directory, 0o040000),
            b'3' => (Kind::Special(0o020000), 0o020000),
            b'4' => (Kind::Special(0o060000), 0o060000),
            b'6' => (Kind::Special(0o010000), 0o010000),
            _ => return Err(bad("entry type")),
        };
        if npm {
            let is_link = matches!(kind, Kind::HardLink | Kind::Symlink);
            if raw_path.is_empty() {
                return Err(bad("an entry without a name"));
            }
            if is_link == link.is_empty() {
                return Err(bad("a link without a target, or a file with one"));
            }
            if !matches!(kind, Kind::File | Kind::Directory) && size != 0 {
                return Err(bad("a link or device declaring content"));
            }
        }
        let content = if matches!(kind, Kind::File) { size } else { 0 };
        let header = Header {
            path: name,
            raw_path,
            kind,
            mode: perm | type_bits,
            size: content,
            link,
            offset: r.at,
        };
        let dotdot = header.path.split(|b| *b == b'/').any(|c| c == b"..");
        if !header.path.is_empty() && (npm || !dotdot) {
            let mut data = (&mut r).take(content);
            each(&header, &mut data)?;
            let left = data.limit();
            skip(&mut r, left)?;
        } else {
            skip(&mut r, content)?;
        }
        skip(&mut r, (512 - content % 512) % 512)?;
    }
}

/// A pax `size`: decimal digits. An npm tarball with another spelling (`0x200`, ` 512`,
/// which node-tar reads as numbers) is refused; elsewhere it is an unreadable archive too.
fn decimal(value: &[u8], npm: bool) -> io::Result<u64> {
    let parsed = (!value.is_empty() && value.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(value).ok()?.parse().ok())
        .flatten();
    parsed.ok_or_else(|| {
        bad(if npm {
            "a pax `size` node-tar may read differently"
        } else {
            "pax `size`"
        })
    })
}

/// One pax record: key, value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// `"<len> key=value\n"` records, and whether they are clean: every byte in a record that ends
/// in its newline and holds no other (node-tar splits records at newlines, so a value holding
/// one, or a length that does not end at one, is read differently there).
fn pax_records(data: &[u8]) -> (Vec<Record<'_>>, bool) {
    let mut out = Vec::new();
    let mut rest = data;
    let mut clean = true;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            clean = false;
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            clean = false;
            break;
        };
        if len <= space + 1 || len > rest.len() {
            clean = false;
            break;
        }
        let record = &rest[space + 1..len - 1];
        if rest[len - 1] != b'\n' || record.contains(&b'\n') {
            clean = false;
        }
        match record.iter().position(|b| *b == b'=') {
            Some(eq) => out.push((&record[..eq], &record[eq + 1..])),
            None => clean = false,
        }
        rest = &rest[len..];
    }
    (out, clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], flag: u8, size: u64, link: &[u8]) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// (name, type flag, content, link target) of one entry.
    type Part<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

    fn archive(parts: &[Part<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, flag, data, link) in parts {
            out.extend_from_slice(&header(name, *flag, data.len() as u64, link));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// Files, links, a GNU long name and directories come out with their kinds and content;
    /// `..` entries are never passed on; a truncated archive is an error.
    #[test]
    fn entries_and_extensions_are_read() {
        let long = "d/".repeat(80) + "deep.txt";
        let tar = archive(&[
            (b"./", b'5', b"", b""),
            (b"./a.txt", b'0', b"hello", b""),
            (b"././@LongLink", b'L', long.as_bytes(), b""),
            (b"truncated", b'0', b"x", b""),
            (b"./ln", b'2', b"", b"/etc/shadow"),
            (b"../escape", b'0', b"no", b""),
        ]);
        let mut seen = Vec::new();
        entries(&tar[..], |h, r| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            seen.push((
                String::from_utf8_lossy(&h.path).into_owned(),
                h.kind,
                data,
                h.link.clone(),
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(
            seen[0],
            ("a.txt".into(), Kind::File, b"hello".to_vec(), vec![])
        );
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[2].1, Kind::Symlink);
        assert_eq!(seen[2].3, b"/etc/shadow");
        assert!(entries(&tar[..700], |_, _| Ok(())).is_err());
    }

    /// A lone zero block does not end the archive (node-tar, npm's unpacker, skips it and
    /// unpacks what follows): the entry after it is read; two in a row end it.
    #[test]
    fn a_lone_zero_block_does_not_hide_what_follows() {
        let first = archive(&[(b"a.txt", b'0', b"a", b"")]);
        let second = archive(&[(b"b.txt", b'0', b"b", b"")]);
        // `first` without its second end block, then `second`.
        let tar = [&first[..first.len() - 512], &second[..]].concat();
        let mut seen = Vec::new();
        entries(&tar[..], |h, _| {
            seen.push(h.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"a.txt".to_vec(), b"b.txt".to_vec()]);
        let mut seen = Vec::new();
        entries(&[&first[..], &second[..]].concat()[..], |h, _| {
            seen.push(h.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"a.txt".to_vec()]);
    }

    /// The two readers part where node-tar and a mount's own `tar` do: a block with a bad
    /// checksum ends the mount walk but is skipped for npm, `..` entries reach only the npm
    /// reader, and both read a GNU header's prefix bytes as no prefix and an old-style file
    /// named with a trailing `/` as a directory without content.
    #[test]
    fn the_npm_reader_follows_node_tar() {
        let mut gnu = header(b"a.txt", b'0', 1, b"");
        gnu[257..265].copy_from_slice(b"ustar  \0");
        gnu[345..347].copy_from_slice(b"zz");
        gnu[148..156].copy_from_slice(b"        ");
        let sum: u64 = gnu.iter().map(|b| *b as u64).sum();
        gnu[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut garbage = [b'{'; 512];
        garbage[511] = b'}';
        let slash_dir = header(b"d/", b'0', 1024, b"");
        let tar = [
            &garbage[..],
            &gnu[..],
            &[b'x'; 512][..],
            &slash_dir[..],
            &archive(&[(b"../up", b'0', b"u", b""), (b"b.txt", b'0', b"b", b"")])[..],
        ]
        .concat();
        let names = |npm: bool, tar: &[u8]| -> io::Result<Vec<(Vec<u8>, Kind)>> {
            let mut seen = Vec::new();
            walk(tar, npm, |h, _| {
                seen.push((h.path.clone(), h.kind));
                Ok(())
            })?;
            Ok(seen)
        };
        assert!(names(false, &tar).is_err());
        let expected = vec![
            (b"a.txt".to_vec(), Kind::File),
            (b"d".to_vec(), Kind::Directory),
            (b"b.txt".to_vec(), Kind::File),
        ];
        assert_eq!(names(false, &tar[512..]).unwrap(), expected);
        let npm = names(true, &tar).unwrap();
        assert_eq!(npm.len(), 4, "{npm:?}");
        assert_eq!(npm[2], (b"../up".to_vec(), Kind::File));
    }

    /// `field` written into `h` at `at`, with the checksum then set as `cksum` spells it.
    fn patched(mut h: [u8; 512], at: usize, field: &[u8], cksum: &str) -> [u8; 512] {
        h[at..at + field.len()].copy_from_slice(field);
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        let text = cksum.replace("SUM", &format!("{sum:06o}"));
        h[148..148 + text.len()].copy_from_slice(text.as_bytes());
        h
    }

    /// The names the npm reader passes on, or its error.
    fn npm_names(tar: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut seen = Vec::new();
        npm_entries(tar, |h, _| {
            seen.push(h.path.clone());
            Ok(())
        })?;
        Ok(seen)
    }

    /// A hidden manifest behind a header whose numbers node-tar reads (tab, sign or newline
    /// before the digits, 12 checksum bytes) and this reader would not, or the reverse, makes
    /// the tarball unread; a block both reject is still skipped.
    #[test]
    fn numbers_node_tar_reads_differently_are_refused() {
        let index = archive(&[(b"package/index.js", b'0', b"module.exports=1\n", b"")]);
        let index = &index[..index.len() - 1024];
        let hook = br#"{"scripts":{"postinstall":"echo PWNED"}}"#;
        let manifest = header(b"package/package.json", b'0', hook.len() as u64, b"");
        let tail = [&[0u8; 512][..], &[0u8; 1024][..]].concat();
        let with = |h: [u8; 512]| {
            let mut content = hook.to_vec();
            content.resize(512, 0);
            [index, &h[..], &content[..], &tail[..]].concat()
        };
        assert_eq!(npm_names(&with(manifest)).unwrap().len(), 2);
        for cksum in ["\tSUM\0", "+SUM\0", "\nSUM\0", "SUM\0\t"] {
            let h = patched(manifest, 0, b"", cksum);
            let read = npm_names(&with(h));
            if cksum.starts_with("SUM") {
                assert_eq!(read.unwrap().len(), 2, "{cksum:?}");
            } else {
                assert!(read.is_err(), "{cksum:?}");
            }
        }
        // Eight digits run into the type flag for node-tar: it skips what this reader accepts.
        assert!(npm_names(&with(patched(manifest, 0, b"", "00SUM"))).is_err());
        // Both reject a garbage checksum: skipped, as node-tar skips it.
        let garbage = patched(manifest, 0, b"", "zzzzzzzz");
        assert_eq!(npm_names(&with(garbage)).unwrap().len(), 1);
        // A size node-tar reads as 1024 and this reader as 0 (the PoC's desync), with a tab or
        // a sign, and a mode it reads with a sign.
        for (at, field) in [
            (124, &b"\t0000002000\0"[..]),
            (124, b"+0000002000\0"),
            (100, b"+000644\0"),
        ] {
            let h = patched(manifest, at, field, "SUM\0");
            assert!(npm_names(&with(h)).is_err(), "{field:?}");
        }
        // Base-256 both read alike is read; a lead byte node-tar throws on is refused.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = hook.len() as u8;
        let h = patched(manifest, 124, &big, "SUM\0");
        assert_eq!(npm_names(&with(h)).unwrap().len(), 2);
        let h = patched(manifest, 108, &[0x81, 0, 0, 0, 0, 0, 0, 1], "SUM\0");
        assert!(npm_names(&with(h)).is_err());
        // A block that is an end block only to node-tar (no checksum number).
        let mut null = [0u8; 512];
        null[148..151].copy_from_slice(b"abc");
        assert!(npm_names(&[index, &null[..], &with(manifest)[index.len()..]].concat()).is_err());
    }

    /// node-tar 6 (npm 10) applies a pending pax `x` header to a GNU long name or link or
    /// another extension header after it, node-tar 7 does not: the npm reader refuses the
    /// tarball; a pax `x` before its own entry is read as before.
    #[test]
    fn a_pax_header_before_another_extension_is_refused() {
        let pax = b"15 size=000000\n".to_vec();
        for flag in [b'L', b'K', b'x', b'g'] {
            let tar = archive(&[
                (b"PaxHeader", b'x', &pax, b""),
                (b"././@LongLink", flag, b"package/package.json", b""),
                (b"package/a", b'0', b"a", b""),
            ]);
            assert!(npm_names(&tar).is_err(), "{}", flag as char);
        }
        let tar = archive(&[
            (b"PaxHeader", b'x', b"11 size=01\n", b""),
            (b"package/a", b'0', b"a", b""),
            (b"././@LongLink", b'L', b"package/package.json", b""),
            (b"x", b'0', b"{}", b""),
        ]);
        assert_eq!(
            npm_names(&tar).unwrap(),
            vec![b"package/a".to_vec(), b"package/package.json".to_vec()]
        );
    }
}
