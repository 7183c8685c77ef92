//! Files the user names for output (`export -o`, `incident report -o`, `--metrics-file`).
//!
//! A regular file (or a path where nothing is yet) is written whole or not at all: into a
//! hidden, uniquely named file in the same directory, renamed over the target once complete,
//! so a reader (node_exporter reads `*.prom` files at any moment) never sees half a file and
//! nothing else of the user's is touched. A symlink to a regular file is kept, and the file it
//! names replaced the same way. Anything else that is already there (`/dev/stdout`, a FIFO, a
//! device, a symlink to one) is written to directly, as a shell redirection would: it is not
//! replaced by a regular file. The store itself, or one of the files SQLite keeps beside it, is
//! never a target.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::InputError;

/// An output file being written; [`Output::finish`] puts it in place.
pub(crate) struct Output {
    /// The path the user gave, which every error names.
    path: PathBuf,
    sink: Sink,
}

/// Where an [`Output`]'s bytes go.
enum Sink {
    /// Written beside `target`, then renamed over it.
    Replace {
        file: BufWriter<File>,
        temp: tempfile::TempPath,
        target: PathBuf,
    },
    /// Written to what is already at the path.
    Direct(BufWriter<File>),
}

impl Output {
    /// Opens `path` for writing; `store` is the store the command reads, which the output must
    /// not be.
    pub(crate) fn create(path: &Path, store: &Path) -> Result<Self, InputError> {
        refuse_store(path, store)?;
        let fail = |err| write_error(path, err);
        let target = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
                Ok(target) if target.is_file() => Some(std::fs::canonicalize(path).map_err(fail)?),
                _ => None,
            },
            Ok(meta) if meta.is_file() => Some(path.to_path_buf()),
            Ok(meta) if meta.is_dir() => {
                return Err(InputError::invalid(format!(
                    "cannot write `{}`: it is a directory",
                    path.display()
                )));
            }
            Ok(_) => None,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Some(path.to_path_buf()),
            Err(err) => return Err(fail(err)),
        };
        let sink = match target {
            Some(target) => {
                let dir = target
                    .parent()
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let name = target.file_name().unwrap_or_default().to_string_lossy();
                // Opened here rather than by `tempfile`, whose errors name its hidden file.
                let (file, temp) = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .suffix(".tmp")
                    .make_in(dir, |temp| {
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o666)
                            .open(temp)
                    })
                    .map_err(fail)?
                    .into_parts();
                Sink::Replace {
                    file: BufWriter::new(file),
                    temp,
                    target,
                }
            }
            None => {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
                    .map_err(fail)?;
                Sink::Direct(BufWriter::new(file))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            sink,
        })
    }

    /// The error for a failed write, naming the path the user gave.
    pub(crate) fn error(&self, err: io::Error) -> InputError {
        write_error(&self.path, err)
    }

    /// Puts the written file in place. Dropped without this, a file being replaced is left as
    /// it was.
    pub(crate) fn finish(self) -> Result<(), InputError> {
        let fail = |err| write_error(&self.path, err);
        match self.sink {
            Sink::Replace { file, temp, target } => {
                let file = file.into_inner().map_err(|err| fail(err.into_error()))?;
                drop(file);
                temp.persist(&target).map_err(|err| fail(err.error))?;
            }
            Sink::Direct(mut file) => file.flush().map_err(fail)?,
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Replace { file, .. } => file.write(buf),
            Sink::Direct(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Replace { file, .. } => file.flush(),
            Sink::Direct(file) => file.flush(),
        }
    }
}

/// Writes `bytes` to the output file `path` ([`Output`]).
pub(crate) fn write_file(path: &Path, store: &Path, bytes: &[u8]) -> Result<(), InputError> {
    let mut out = Output::create(path, store)?;
    out.write_all(bytes).map_err(|err| out.error(err))?;
    out.finish()
}

/// The error for an output file that cannot be written: bad input (exit 2), naming the path.
fn write_error(path: &Path, err: io::Error) -> InputError {
    InputError::Write {
        path: path.display().to_string(),
        source: err,
    }
}

/// Refuses an output path that is the store at `store` or one of the files SQLite keeps
/// beside it (compared as files, so another name or a link to them is refused too).
fn refuse_store(path: &Path, store: &Path) -> Result<(), InputError> {
    let Ok(target) = std::fs::metadata(path) else {
        return Ok(());
    };
    for file in crate::store::store_files(store) {
        if std::fs::metadata(&file).is_ok_and(|meta| same_file(&meta, &target)) {
            return Err(InputError::invalid(format!(
                "cannot write `{}`: it is the store `{}`, which the output would overwrite",
                path.display(),
                file.display()
            )));
        }
    }
    Ok(())
}

/// Whether two files' metadata are of one file.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file is replaced whole, a file of the user's beside it (`x.partial`) is left
    /// alone, and nothing is left behind.
    #[test]
    fn a_regular_file_is_replaced_whole_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let store = dir.path().join("s.db");
        std::fs::write(&path, "old").unwrap();
        std::fs::write(dir.path().join("x.partial"), "mine").unwrap();
        write_file(&path, &store, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.partial")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // Dropped unfinished: the old file stays, and no temporary file is left.
        let mut out = Output::create(&path, &store).unwrap();
        out.write_all(b"half").unwrap();
        drop(out);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// A symlink stays a symlink (the file it names is replaced), and a device is written to,
    /// not replaced.
    #[test]
    fn links_and_devices_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let real = dir.path().join("real.prom");
        std::fs::write(&real, "old").unwrap();
        let link = dir.path().join("link.prom");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_file(&link, &store, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        write_file(Path::new("/dev/null"), &store, b"gone").unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
    }

    /// The store, its sidecars, or a link to them are refused; a missing directory and a full
    /// device are errors naming the path given.
    #[test]
    fn the_store_and_unwritable_paths_are_refused_by_the_path_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        std::fs::write(&store, "store").unwrap();
        std::fs::write(dir.path().join("s.db-wal"), "wal").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        for path in [store.clone(), dir.path().join("s.db-wal"), link] {
            let err = write_file(&path, &store, b"x").unwrap_err().to_string();
            assert!(err.contains("is the store"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&store).unwrap(), "store");
        let missing = dir.path().join("no/such/x.jsonl");
        let err = write_file(&missing, &store, b"x").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot write `{}`: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let full = Path::new("/dev/full");
        if full.exists() {
            let err = write_file(full, &store, b"x").unwrap_err().to_string();
            assert!(err.starts_with("cannot write `/dev/full`"), "{err}");
        }
    }
}
