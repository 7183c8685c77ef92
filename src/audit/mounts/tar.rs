//! Just enough of the tar format to walk a mount's copy as one stream: ustar and GNU headers,
//! GNU long names and links, pax `path`/`linkpath`/`size` records. Names are bytes from the
//! builder: they never become paths on this machine.

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
/// `each` leaves unread is skipped.
pub fn entries<R: Read>(
    reader: R,
    mut each: impl FnMut(&Header, &mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = Counting {
        inner: reader,
        at: 0,
    };
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    loop {
        let mut block = [0u8; 512];
        match r.read_exact(&mut block) {
            Ok(()) => {}
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
        if octal(&block[148..156])? != sum {
            return Err(bad("header checksum"));
        }
        let size = octal(&block[124..136])?;
        let flag = block[156];
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
                for (key, value) in pax_records(&data) {
                    match key {
                        b"path" => long_name = Some(value.to_vec()),
                        b"linkpath" => long_link = Some(value.to_vec()),
                        b"size" => {
                            pax_size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                        }
                        _ => {}
                    }
                }
                continue;
            }
            b'g' => {
                read_extension(&mut r, size)?;
                continue;
            }
            _ => {}
        }
        let mut name = match long_name.take() {
            Some(n) => n,
            None => {
                let base = cstr(&block[0..100]);
                let prefix = if &block[257..262] == b"ustar" {
                    cstr(&block[345..500])
                } else {
                    &[]
                };
                if prefix.is_empty() {
                    base.to_vec()
                } else {
                    [prefix, b"/", base].concat()
                }
            }
        };
        let link = long_link
            .take()
            .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
        let size = pax_size.take().unwrap_or(size);
        while name.starts_with(b"./") {
            name.drain(..2);
        }
        while name.ends_with(b"/") {
            name.pop();
        }
        let perm = (octal(&block[100..108])? & 0o7777) as u32;
        let (kind, type_bits) = match flag {
            b'0' | 0 | b'7' => (Kind::File, 0o100000),
            b'1' => (Kind::HardLink, 0o100000),
            b'2' => (Kind::Symlink, 0o120000),
            b'5' => (Kind::Directory, 0o040000),
            b'3' => (Kind::Special(0o020000), 0o020000),
            b'4' => (Kind::Special(0o060000), 0o060000),
            b'6' => (Kind::Special(0o010000), 0o010000),
            _ => return Err(bad("entry type")),
        };
        let content = if matches!(kind, Kind::File) { size } else { 0 };
        let header = Header {
            path: name,
            kind,
            mode: perm | type_bits,
            size: content,
            link,
            offset: r.at,
        };
        if !header.path.is_empty() && !header.path.split(|b| *b == b'/').any(|c| c == b"..") {
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

/// `"<len> key=value\n"` records.
fn pax_records(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space + 1 || len > rest.len() {
            break;
        }
        let record = &rest[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            out.push((&record[..eq], &record[eq + 1..]));
        }
        rest = &rest[len..];
    }
    out
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
}
