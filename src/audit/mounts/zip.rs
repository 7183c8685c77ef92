//! Just enough of the zip format to hash every member of a wheel or a Go module zip: the
//! central directory, each member's local header, stored or deflated data streamed through
//! SHA-256. Memory stays bounded by the central directory, not by the members.
//!
//! A member's name is read as each tool reads it: Go takes the bytes as they are; Python's
//! `zipfile` (pip) decodes them as UTF-8 when flag bit 11 says so and as code page 437
//! otherwise, cuts them at the first NUL, and from Python 3.12 on prefers an Info-ZIP Unicode
//! Path extra field whose CRC matches the name.
//!
//! An archive that Python or Go would read otherwise than by its end record's count and
//! offsets (prepended data, bytes after the end record, directory entries beyond the count, a
//! zip64 record) is refused rather than guessed at.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest as _, Sha256};

/// Members kept in memory ([`Member::content`]) are at most this big.
pub const CONTENT_LIMIT: u64 = 16 << 20;
/// A central directory larger than this is refused.
const DIRECTORY_LIMIT: u64 = 64 << 20;
/// [`inflate_limit`] of a small archive.
pub const INFLATE_FLOOR: u64 = 256 << 20;
/// [`inflate_limit`] of any archive.
pub const INFLATE_CEILING: u64 = 4 << 30;

/// One member of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name as Go reads it: the bytes as they are (not UTF-8: lossily decoded).
    pub name: String,
    /// The name as Python's `zipfile` reads it, and pip installs it: decoded by flag bit 11
    /// (UTF-8, else code page 437), cut at the first NUL.
    pub pip_name: String,
    /// The name an Info-ZIP Unicode Path extra field gives it (CRC matching), which Python 3.12
    /// and later read instead of [`Self::pip_name`], cut at the first NUL.
    pub unicode_name: Option<String>,
    /// A directory entry (its name ends in `/`; its content is empty).
    pub is_dir: bool,
    pub sha256: [u8; 32],
    /// The bytes, for members the caller asked to keep.
    pub content: Option<Vec<u8>>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a readable zip: {what}"),
    )
}

/// Code page 437 above ASCII, as Python's `cp437` codec decodes it.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// A name as Python's `zipfile` reads it: UTF-8 when flag bit 11 is set, else code page 437;
/// cut at the first NUL.
pub fn python_name(raw: &[u8], flags: u16) -> String {
    let decoded: String = if flags & 0x800 != 0 {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        raw.iter()
            .map(|&b| match b {
                0..=0x7f => b as char,
                _ => CP437[b as usize - 0x80],
            })
            .collect()
    };
    cut_at_nul(decoded)
}

static CP437: std::sync::LazyLock<Vec<char>> =
    std::sync::LazyLock::new(|| CP437_HIGH.chars().collect());

fn cut_at_nul(mut name: String) -> String {
    if let Some(at) = name.find('\0') {
        name.truncate(at);
    }
    name
}

/// The name an Info-ZIP Unicode Path extra field (0x7075, version 1) gives a member whose raw
/// name has the CRC it records.
fn unicode_path(extra: &[u8], raw: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = u16_at(extra, at);
        let len = u16_at(extra, at + 2) as usize;
        let data = extra.get(at + 4..at + 4 + len)?;
        if id == 0x7075 && data.len() >= 5 && data[0] == 1 {
            let mut crc = flate2::Crc::new();
            crc.update(raw);
            if u32_at(data, 1) == crc.sum() {
                let name = cut_at_nul(String::from_utf8_lossy(&data[5..]).into_owned());
                return (!name.is_empty()).then_some(name);
            }
        }
        at += 4 + len;
    }
    None
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One central directory entry.
struct Entry {
    name: String,
    pip_name: String,
    unicode_name: Option<String>,
    raw: Vec<u8>,
    flags: u16,
    method: u16,
    compressed: u64,
    uncompressed: u64,
    /// Where its local header starts.
    local: u64,
    /// Where its data starts.
    data: u64,
}

/// Bytes an archive of `len` bytes may inflate to, all members together: 64 times its size
/// (real wheels and module zips inflate 2 to 10 times), at least [`INFLATE_FLOOR`], at most
/// [`INFLATE_CEILING`].
pub fn inflate_limit(len: u64) -> u64 {
    len.saturating_mul(64).clamp(INFLATE_FLOOR, INFLATE_CEILING)
}

/// Hashes every member, directory entries included (Go's dirhash hashes them as empty files);
/// keeps the bytes of those whose [`Member::pip_name`] `keep` names.
pub fn members<R: Read + Seek>(mut r: R, keep: impl Fn(&str) -> bool) -> io::Result<Vec<Member>> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65535);
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0; tail_len as usize];
    r.read_exact(&mut tail)?;
    // The last end-record signature, as Python's `zipfile` takes it; Go takes the last one
    // whose comment fits. Both agree when its comment runs exactly to the end of the file.
    let end = (0..tail.len().saturating_sub(3))
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| bad("no end of central directory"))?;
    if end + 22 > tail.len() || end + 22 + u16_at(&tail, end + 20) as usize != tail.len() {
        return Err(bad("end of central directory does not end the file"));
    }
    let disk = u16_at(&tail, end + 4);
    let dir_disk = u16_at(&tail, end + 6);
    let on_disk = u16_at(&tail, end + 8);
    let count = u16_at(&tail, end + 10) as usize;
    let size = u32_at(&tail, end + 12) as u64;
    let offset = u32_at(&tail, end + 16) as u64;
    if disk != 0 || dir_disk != 0 || on_disk as usize != count {
        return Err(bad("multi-disk archive"));
    }
    if count == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff {
        return Err(bad("zip64 archives are not read"));
    }
    let end_at = len - tail_len + end as u64;
    // Python reads a zip64 record instead whenever its locator sits right before the end
    // record, whatever the end record says.
    if end_at >= 20 {
        r.seek(SeekFrom::Start(end_at - 20))?;
        let mut sig = [0u8; 4];
        r.read_exact(&mut sig)?;
        if u32::from_le_bytes(sig) == 0x0706_4b50 {
            return Err(bad("zip64 locator before the end record"));
        }
    }
    if size > DIRECTORY_LIMIT {
        return Err(bad("central directory out of bounds"));
    }
    // Python and Go find the directory just before the end record and shift every offset
    // by the bytes in front of the archive: only an archive with nothing in front reads the
    // same by its offsets.
    if offset + size != end_at {
        return Err(bad("central directory not right before the end record"));
    }
    r.seek(SeekFrom::Start(offset))?;
    let mut dir = vec![0; size as usize];
    r.read_exact(&mut dir)?;
    let mut entries = Vec::with_capacity(count);
    let mut at = 0;
    for _ in 0..count {
        if at + 46 > dir.len() || u32_at(&dir, at) != 0x0201_4b50 {
            return Err(bad("central directory entry"));
        }
        let flags = u16_at(&dir, at + 8);
        let method = u16_at(&dir, at + 10);
        let compressed = u32_at(&dir, at + 20) as u64;
        let uncompressed = u32_at(&dir, at + 24) as u64;
        let name_len = u16_at(&dir, at + 28) as usize;
        let extra_len = u16_at(&dir, at + 30) as usize;
        let comment_len = u16_at(&dir, at + 32) as usize;
        let local = u32_at(&dir, at + 42) as u64;
        if [compressed, uncompressed, local].contains(&0xffff_ffff) {
            // Their real values are in a zip64 extra field.
            return Err(bad("zip64 member"));
        }
        let name_end = at + 46 + name_len;
        if name_end > dir.len() {
            return Err(bad("name out of bounds"));
        }
        let raw = &dir[at + 46..name_end];
        let extra = dir
            .get(name_end..name_end + extra_len)
            .ok_or_else(|| bad("extra field out of bounds"))?;
        entries.push(Entry {
            name: String::from_utf8_lossy(raw).into_owned(),
            pip_name: python_name(raw, flags),
            unicode_name: unicode_path(extra, raw),
            raw: raw.to_vec(),
            flags,
            method,
            compressed,
            uncompressed,
            local,
            data: 0,
        });
        at = name_end + extra_len + comment_len;
    }
    // Python reads entries until the directory's size is used up, not `count` of them.
    if at != dir.len() {
        return Err(bad("central directory holds more than its entry count"));
    }
    // A bomb declares more than it may inflate to, or reads one member's data many times over:
    // the declared sizes are capped (each member is held to its own), and members may neither
    // share nor overlap their bytes.
    let declared: u64 = entries.iter().map(|e| e.uncompressed).sum();
    let limit = inflate_limit(len);
    if declared > limit {
        return Err(bad(&format!(
            "members declare {declared} bytes, over the limit of {limit} for a {len}-byte archive"
        )));
    }
    let mut by_offset: Vec<usize> = (0..entries.len()).collect();
    by_offset.sort_by_key(|&i| entries[i].local);
    for (k, &i) in by_offset.iter().enumerate() {
        let e = &entries[i];
        r.seek(SeekFrom::Start(e.local))?;
        let mut header = [0u8; 30];
        r.read_exact(&mut header)?;
        if u32_at(&header, 0) != 0x0403_4b50 {
            return Err(bad("local header"));
        }
        let name_len = u16_at(&header, 26) as u64;
        let mut local_name = vec![0; name_len as usize];
        r.read_exact(&mut local_name)?;
        if local_name != e.raw {
            // Python refuses it; Go reads the directory's name: one member, two names.
            return Err(bad("local header names another member"));
        }
        let data = e.local + 30 + name_len + u16_at(&header, 28) as u64;
        let next = by_offset.get(k + 1).map_or(offset, |&j| entries[j].local);
        if data + e.compressed > next {
            return Err(bad("members overlap"));
        }
        entries[i].data = data;
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Entry {
            name,
            pip_name,
            unicode_name,
            flags,
            method,
            compressed,
            uncompressed,
            data,
            ..
        } = e;
        if flags & 1 != 0 {
            return Err(bad("encrypted member"));
        }
        r.seek(SeekFrom::Start(data))?;
        let data = (&mut r).take(compressed);
        let mut reader: Box<dyn Read + '_> = match method {
            0 => Box::new(data),
            8 => Box::new(flate2::read::DeflateDecoder::new(data)),
            _ => return Err(bad("compression method")),
        };
        let keep_it = keep(&pip_name) && uncompressed <= CONTENT_LIMIT;
        let mut content = keep_it.then(Vec::new);
        let mut hasher = Sha256::new();
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > uncompressed {
                return Err(bad("member larger than its declared size"));
            }
            hasher.update(&buf[..n]);
            if let Some(c) = &mut content {
                c.extend_from_slice(&buf[..n]);
            }
        }
        if total != uncompressed {
            return Err(bad("member shorter than its declared size"));
        }
        out.push(Member {
            is_dir: name.ends_with('/'),
            name,
            pip_name,
            unicode_name,
            sha256: hasher.finalize().into(),
            content,
        });
    }
    Ok(out)
}

/// Test and benchmark helper: a zip of stored (uncompressed) members.
pub fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let raw: Vec<RawMember<'_>> = files
        .iter()
        .map(|(name, data)| RawMember {
            name: name.as_bytes(),
            flags: 0,
            extra: &[],
            data,
        })
        .collect();
    stored_zip_raw(&raw)
}

/// One member for [`stored_zip_raw`]: name bytes, flag bits and extra field as given.
pub struct RawMember<'a> {
    pub name: &'a [u8],
    pub flags: u16,
    pub extra: &'a [u8],
    pub data: &'a [u8],
}

/// Test helper: a zip of stored members whose names, flags and extra fields (in both headers)
/// are written as given.
pub fn stored_zip_raw(files: &[RawMember<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dir = Vec::new();
    for f in files {
        let offset = out.len() as u32;
        let crc = {
            let mut c = flate2::Crc::new();
            c.update(f.data);
            c.sum()
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0]);
        out.extend_from_slice(&f.flags.to_le_bytes());
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(f.extra.len() as u16).to_le_bytes());
        out.extend_from_slice(f.name);
        out.extend_from_slice(f.extra);
        out.extend_from_slice(f.data);
        dir.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        dir.extend_from_slice(&[20, 0, 20, 0]);
        dir.extend_from_slice(&f.flags.to_le_bytes());
        dir.extend_from_slice(&[0; 6]);
        dir.extend_from_slice(&crc.to_le_bytes());
        dir.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        dir.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        dir.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
        dir.extend_from_slice(&(f.extra.len() as u16).to_le_bytes());
        dir.extend_from_slice(&[0; 10]);
        dir.extend_from_slice(&offset.to_le_bytes());
        dir.extend_from_slice(f.name);
        dir.extend_from_slice(f.extra);
    }
    let dir_offset = out.len() as u32;
    out.extend_from_slice(&dir);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(dir.len() as u32).to_le_bytes());
    out.extend_from_slice(&dir_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write as _};

    use super::*;

    /// Stored members (directory entries too) are hashed and kept on request; a truncated
    /// archive is refused.
    #[test]
    fn stored_members_are_hashed() {
        let zip = stored_zip(&[("a/b.txt", b"hello"), ("a/", b""), ("R", b"rec")]);
        let got = members(Cursor::new(&zip), |n| n == "R").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name, "a/b.txt");
        assert_eq!(got[0].sha256, <[u8; 32]>::from(Sha256::digest(b"hello")));
        assert_eq!(got[0].content, None);
        assert!(got[1].is_dir && !got[0].is_dir);
        assert_eq!(got[1].sha256, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(got[2].content.as_deref(), Some(&b"rec"[..]));
        assert!(members(Cursor::new(&zip[..zip.len() - 30]), |_| false).is_err());
    }

    /// A module zip written by a second implementation (Python's `zipfile`, deflated, with a
    /// directory entry) gives the h1 hash Python computes by Go's definition.
    #[test]
    fn a_foreign_module_zip_hashes_as_go_defines() {
        use base64::Engine as _;
        let zip = base64::engine::general_purpose::STANDARD
            .decode("UEsDBBQAAAAIAOhBhF0AAAAAAgAAAAAAAAAVAAAAZXhhbXBsZS5jb20vbUB2MS4wLjAvAwBQSwMEFAAAAAgA6EGEXZIRlCsgAAAAHgAAABsAAABleGFtcGxlLmNvbS9tQHYxLjAuMC9nby5tb2TLzU8pzUlVSK1IzC3ISdVLzs/Vz+XiSs9XMNQzMuQCAFBLAwQUAAAACADoQYRd2CGEwTgAAADMAAAAGQAAAGV4YW1wbGUuY29tL21AdjEuMC4wL20uZ28rSEzOTkxPVcjl4korzUtW8EjNycnX0FQoLinKzEtXqFYoSi0pLcpTUMoASShgkEoKtVwFg8QMAFBLAQIUAxQAAAAIAOhBhF0AAAAAAgAAAAAAAAAVAAAAAAAAAAAAEAD9QQAAAABleGFtcGxlLmNvbS9tQHYxLjAuMC9QSwECFAMUAAAACADoQYRdkhGUKyAAAAAeAAAAGwAAAAAAAAAAAAAAgAE1AAAAZXhhbXBsZS5jb20vbUB2MS4wLjAvZ28ubW9kUEsBAhQDFAAAAAgA6EGEXdghhME4AAAAzAAAABkAAAAAAAAAAAAAAIABjgAAAGV4YW1wbGUuY29tL21AdjEuMC4wL20uZ29QSwUGAAAAAAMAAwDTAAAA/QAAAAAA")
            .unwrap();
        let members = members(Cursor::new(&zip), |_| false).unwrap();
        let list: Vec<(String, [u8; 32])> =
            members.into_iter().map(|m| (m.name, m.sha256)).collect();
        assert_eq!(
            crate::audit::mounts::checks::go_hash1(&list).as_deref(),
            Some("h1:dndprQOvHI3KQzgDOleQAfbZQDs43EqTWvGEOwDMLyk=")
        );
    }

    /// A deflated member is inflated before hashing.
    #[test]
    fn deflated_members_are_inflated() {
        let data = b"deflate me ".repeat(100);
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let compressed = enc.finish().unwrap();
        let mut zip = stored_zip(&[("x", &compressed)]);
        // Method 8, the uncompressed size, in both headers.
        zip[8] = 8;
        zip[22..26].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let dir = zip.len() - 22 - (46 + 1);
        zip[dir + 10] = 8;
        zip[dir + 24..dir + 28].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let got = members(Cursor::new(&zip), |_| false).unwrap();
        assert_eq!(got[0].sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    }

    /// Names are read as pip's `zipfile` reads them: code page 437 without flag bit 11, UTF-8
    /// with it, cut at a NUL, and a Unicode Path field whose CRC matches read beside them; Go's
    /// reading (the bytes) is kept as it was.
    #[test]
    fn names_are_read_as_python_reads_them() {
        let mut crc = flate2::Crc::new();
        crc.update(b"plain.txt");
        let mut extra = vec![0x75, 0x70];
        let path = b"evil.pth";
        extra.extend_from_slice(&(5 + path.len() as u16).to_le_bytes());
        extra.push(1);
        extra.extend_from_slice(&crc.sum().to_le_bytes());
        extra.extend_from_slice(path);
        let raw = |name: &'static [u8], flags: u16, extra: &'static [u8]| RawMember {
            name,
            flags,
            extra,
            data: b"x",
        };
        let extra: &'static [u8] = Box::leak(extra.into_boxed_slice());
        let zip = stored_zip_raw(&[
            raw(b"evil4.pth\0.txt", 0, &[]),
            raw(b"caf\x82.pth", 0, &[]),
            raw("café.pth".as_bytes(), 0x800, &[]),
            raw(b"plain.txt", 0, extra),
            raw(b"other.txt", 0, extra),
        ]);
        let got = members(Cursor::new(&zip), |_| false).unwrap();
        let names: Vec<(&str, &str, Option<&str>)> = got
            .iter()
            .map(|m| {
                (
                    m.name.as_str(),
                    m.pip_name.as_str(),
                    m.unicode_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("evil4.pth\0.txt", "evil4.pth", None),
                ("caf\u{fffd}.pth", "caf\u{e9}.pth", None),
                ("café.pth", "café.pth", None),
                ("plain.txt", "plain.txt", Some("evil.pth")),
                ("other.txt", "other.txt", None),
            ]
        );
    }

    /// Archives Python's `zipfile` or Go read other than by their end record's count and
    /// offsets are refused: a directory holding one entry more than its count (pip installed
    /// the extra `.pth`), data in front of the archive, a zip64 locator before the end record,
    /// bytes after the end record's comment; an archive with a fitting comment still reads.
    #[test]
    fn archives_read_otherwise_by_python_or_go_are_refused() {
        let files: &[(&str, &[u8])] = &[("a", b"x"), ("zzevil.pth", b"import os\n")];
        let mut extra_entry = stored_zip(files);
        let end = extra_entry.len() - 22;
        extra_entry[end + 8..end + 12].copy_from_slice(&[1, 0, 1, 0]);
        let err = members(Cursor::new(&extra_entry), |_| false).unwrap_err();
        assert!(
            err.to_string().contains("more than its entry count"),
            "{err}"
        );

        let mut prepended = b"junk in front".to_vec();
        prepended.extend_from_slice(&stored_zip(files));
        let err = members(Cursor::new(&prepended), |_| false).unwrap_err();
        assert!(err.to_string().contains("not right before"), "{err}");

        let mut locator = vec![0xfe, 0xca, 20, 0];
        locator.extend_from_slice(b"PK\x06\x07");
        locator.extend_from_slice(&[0; 16]);
        let zip64 = stored_zip_raw(&[RawMember {
            name: b"a",
            flags: 0,
            extra: &locator,
            data: b"x",
        }]);
        let err = members(Cursor::new(&zip64), |_| false).unwrap_err();
        assert!(err.to_string().contains("zip64 locator"), "{err}");

        let mut trailing = stored_zip(files);
        trailing.extend_from_slice(b"after");
        let err = members(Cursor::new(&trailing), |_| false).unwrap_err();
        assert!(err.to_string().contains("does not end the file"), "{err}");

        let mut commented = stored_zip(files);
        let end = commented.len() - 22;
        commented[end + 20..end + 22].copy_from_slice(&5u16.to_le_bytes());
        commented.extend_from_slice(b"hello");
        assert_eq!(
            members(Cursor::new(&commented), |_| false).unwrap().len(),
            2
        );
        let mut tail_sig = stored_zip(files);
        tail_sig.extend_from_slice(b"PK\x05\x06");
        assert!(members(Cursor::new(&tail_sig), |_| false).is_err());
    }

    /// A zip bomb whose central directory points thousands of entries at one member's bytes is
    /// refused before anything is inflated, as are members declaring more than the archive may
    /// inflate to and a local header naming another member than the directory does.
    #[test]
    fn bombs_and_disguised_members_are_refused() {
        let one = stored_zip(&[("m@v1/a.go", &[7u8; 4096])]);
        let dir_at = one.len() - 22 - (46 + 9);
        let entry = one[dir_at..one.len() - 22].to_vec();
        let mut bomb = one[..dir_at].to_vec();
        let count = 60_000u16;
        for _ in 0..count {
            bomb.extend_from_slice(&entry);
        }
        bomb.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        bomb.extend_from_slice(&[0; 4]);
        bomb.extend_from_slice(&count.to_le_bytes());
        bomb.extend_from_slice(&count.to_le_bytes());
        bomb.extend_from_slice(&(entry.len() as u32 * count as u32).to_le_bytes());
        bomb.extend_from_slice(&(dir_at as u32).to_le_bytes());
        bomb.extend_from_slice(&0u16.to_le_bytes());
        let err = members(Cursor::new(&bomb), |_| false).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");

        let mut big = stored_zip(&[("a", b"x"), ("b", b"y")]);
        let dir_at = big.len() - 22 - 2 * (46 + 1);
        big[dir_at + 24..dir_at + 28].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        let err = members(Cursor::new(&big), |_| false).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");

        let mut renamed = stored_zip(&[("evil.pth", b"import os\n"), ("ok.txt", b"")]);
        renamed[30] = b'E';
        let err = members(Cursor::new(&renamed), |_| false).unwrap_err();
        assert!(err.to_string().contains("another member"), "{err}");

        let fine = stored_zip(&[("a", b"x"), ("b", b"y")]);
        assert_eq!(members(Cursor::new(&fine), |_| false).unwrap().len(), 2);
        assert_eq!(inflate_limit(1), INFLATE_FLOOR);
        assert_eq!(inflate_limit(u64::MAX), INFLATE_CEILING);
    }
}
