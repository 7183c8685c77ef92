//! Just enough of the zip format to hash every member of a wheel or a Go module zip: the
//! central directory, each member's local header, stored or deflated data streamed through
//! SHA-256. Memory stays bounded by the central directory, not by the members.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest as _, Sha256};

/// Members kept in memory ([`Member::content`]) are at most this big.
pub const CONTENT_LIMIT: u64 = 16 << 20;
/// A central directory larger than this is refused.
const DIRECTORY_LIMIT: u64 = 64 << 20;

/// One member of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
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

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Hashes every member, directory entries included (Go's dirhash hashes them as empty files);
/// keeps the bytes of those `keep` names.
pub fn members<R: Read + Seek>(mut r: R, keep: impl Fn(&str) -> bool) -> io::Result<Vec<Member>> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail_len = len.min(22 + 65535);
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0; tail_len as usize];
    r.read_exact(&mut tail)?;
    let end = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| bad("no end of central directory"))?;
    let count = u16_at(&tail, end + 10) as usize;
    let size = u32_at(&tail, end + 12) as u64;
    let offset = u32_at(&tail, end + 16) as u64;
    if count == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff {
        return Err(bad("zip64 archives are not read"));
    }
    if size > DIRECTORY_LIMIT || offset + size > len {
        return Err(bad("central directory out of bounds"));
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
        let name_end = at + 46 + name_len;
        if name_end > dir.len() {
            return Err(bad("name out of bounds"));
        }
        let name = String::from_utf8_lossy(&dir[at + 46..name_end]).into_owned();
        entries.push((name, flags, method, compressed, uncompressed, local));
        at = name_end + extra_len + comment_len;
    }
    let mut out = Vec::with_capacity(entries.len());
    for (name, flags, method, compressed, uncompressed, local) in entries {
        if flags & 1 != 0 {
            return Err(bad("encrypted member"));
        }
        r.seek(SeekFrom::Start(local))?;
        let mut header = [0u8; 30];
        r.read_exact(&mut header)?;
        if u32_at(&header, 0) != 0x0403_4b50 {
            return Err(bad("local header"));
        }
        let skip = u16_at(&header, 26) as i64 + u16_at(&header, 28) as i64;
        r.seek(SeekFrom::Current(skip))?;
        let data = (&mut r).take(compressed);
        let mut reader: Box<dyn Read + '_> = match method {
            0 => Box::new(data),
            8 => Box::new(flate2::read::DeflateDecoder::new(data)),
            _ => return Err(bad("compression method")),
        };
        let keep_it = keep(&name) && uncompressed <= CONTENT_LIMIT;
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
            sha256: hasher.finalize().into(),
            content,
        });
    }
    Ok(out)
}

/// Test and benchmark helper: a zip of stored (uncompressed) members.
pub fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dir = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let header = |sig: u32, out: &mut Vec<u8>| {
            out.extend_from_slice(&sig.to_le_bytes());
        };
        header(0x0403_4b50, &mut out);
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        header(0x0201_4b50, &mut dir);
        dir.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        dir.extend_from_slice(&0u32.to_le_bytes());
        dir.extend_from_slice(&(data.len() as u32).to_le_bytes());
        dir.extend_from_slice(&(data.len() as u32).to_le_bytes());
        dir.extend_from_slice(&(name.len() as u16).to_le_bytes());
        dir.extend_from_slice(&[0; 12]);
        dir.extend_from_slice(&offset.to_le_bytes());
        dir.extend_from_slice(name.as_bytes());
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
}
