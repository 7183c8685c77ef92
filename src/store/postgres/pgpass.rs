//! The password file (`~/.pgpass`, `PGPASSFILE`), read as libpq reads it.
//!
//! One entry a line, `hostname:port:database:username:password`; in each field `\:` is a
//! colon and `\\` a backslash, and a first-four field of exactly `*` matches anything. The
//! first matching line wins. A file that the group or others may read or write is ignored with
//! a warning, as libpq does, and so is anything but a regular file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the connection is to, as the password file's fields name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The host name, or the socket directory of a Unix-socket connection.
    pub host: &'a str,
    /// Also matches a `localhost` entry: a connection to libpq's default socket directory.
    pub default_socket: bool,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// What reading the file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    pub password: Option<String>,
    /// Why the file was ignored, for the user (it names the path, never a password).
    pub warning: Option<String>,
}

/// Looks `target` up in the file at `path`; a missing file is no password and no warning.
pub fn read(path: &Path, target: &Target<'_>) -> Lookup {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Lookup::default(),
    };
    if !meta.is_file() {
        return warn(format!(
            "password file `{}` is not a plain file: ignored",
            path.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return warn(format!(
            "password file `{}` has group or world access: ignored; permissions should be \
             u=rw (0600) or less",
            path.display()
        ));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Lookup {
            password: lookup(&text, target),
            warning: None,
        },
        Err(err) => warn(format!(
            "cannot read password file `{}`: {err}",
            path.display()
        )),
    }
}

fn warn(message: String) -> Lookup {
    Lookup {
        password: None,
        warning: Some(message),
    }
}

/// The password of the first line of `text` that matches `target`.
pub fn lookup(text: &str, target: &Target<'_>) -> Option<String> {
    let port = target.port.to_string();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_line)
        .find(|fields| {
            let host_ok = fields[0].matches(target.host)
                || (target.default_socket && fields[0].matches("localhost"));
            host_ok
                && fields[1].matches(&port)
                && fields[2].matches(target.dbname)
                && fields[3].matches(target.user)
        })
        .map(|mut fields| std::mem::take(&mut fields[4].value))
}

#[derive(Debug, PartialEq, Eq)]
struct Field {
    value: String,
    /// The field was exactly an unescaped `*`.
    any: bool,
}

impl Field {
    fn matches(&self, text: &str) -> bool {
        self.any || self.value == text
    }
}

/// The five fields of a line, unescaped; `None` for a line with fewer. The password ends at
/// the next unescaped colon, as in libpq.
fn parse_line(line: &str) -> Option<[Field; 5]> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::with_capacity(5);
    let mut chars = line.chars();
    let mut value = String::new();
    let mut escaped = false;
    loop {
        match chars.next() {
            Some('\\') => {
                escaped = true;
                // A trailing backslash stands for itself.
                value.push(chars.next().unwrap_or('\\'));
            }
            Some(':') => {
                fields.push(Field::new(std::mem::take(&mut value), escaped));
                escaped = false;
                if fields.len() == 4 {
                    break;
                }
            }
            Some(c) => value.push(c),
            // Fewer than four colons: not an entry.
            None => return None,
        }
    }
    let mut password = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => password.push(chars.next().unwrap_or('\\')),
            ':' => break,
            c => password.push(c),
        }
    }
    fields.push(Field {
        value: password,
        any: false,
    });
    fields.try_into().ok()
}

impl Field {
    fn new(value: String, escaped: bool) -> Self {
        let any = !escaped && value == "*";
        Self { value, any }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(host: &'a str, port: u16, dbname: &'a str, user: &'a str) -> Target<'a> {
        Target {
            host,
            default_socket: false,
            port,
            dbname,
            user,
        }
    }

    /// The first line that matches wins, and `*` matches any value of its field.
    #[test]
    fn first_match_wins_and_star_matches_anything() {
        let text = "db.example:5432:store:hook:first\n*:*:*:hook:second\n*:*:*:*:third\n";
        assert_eq!(
            lookup(text, &target("db.example", 5432, "store", "hook")).as_deref(),
            Some("first")
        );
        assert_eq!(
            lookup(text, &target("other", 6432, "x", "hook")).as_deref(),
            Some("second")
        );
        assert_eq!(
            lookup(text, &target("other", 6432, "x", "responder")).as_deref(),
            Some("third")
        );
        assert_eq!(lookup("a:1:b:c:d\n", &target("a", 2, "b", "c")), None);
    }

    /// `\:` and `\\` are a colon and a backslash in any field, and an escaped `\*` is a
    /// literal star, not a wildcard.
    #[test]
    fn escapes_are_read_as_libpq_reads_them() {
        let text = "h:5432:d\\:b:u:pa\\:ss\\\\word:ignored\n";
        assert_eq!(
            lookup(text, &target("h", 5432, "d:b", "u")).as_deref(),
            Some("pa:ss\\word")
        );
        let text = "\\*:5432:d:u:star\n";
        assert_eq!(lookup(text, &target("h", 5432, "d", "u")), None);
        assert_eq!(
            lookup(text, &target("*", 5432, "d", "u")).as_deref(),
            Some("star")
        );
    }

    /// Comments and short lines never match; an empty password is a password.
    #[test]
    fn comments_and_short_lines_are_skipped() {
        let text = "# *:*:*:*:comment\n*:*:*\n*:*:*:*:\n";
        assert_eq!(lookup(text, &target("h", 1, "d", "u")).as_deref(), Some(""));
        assert_eq!(lookup("*:*:*:*", &target("h", 1, "d", "u")), None);
    }

    /// A connection to the default socket directory also matches a `localhost` entry.
    #[test]
    fn localhost_matches_the_default_socket() {
        let text = "localhost:5432:d:u:local\n";
        let mut socket = target("/var/run/postgresql", 5432, "d", "u");
        assert_eq!(lookup(text, &socket), None);
        socket.default_socket = true;
        assert_eq!(lookup(text, &socket).as_deref(), Some("local"));
    }

    /// A password file others may read is ignored with a warning naming it, never its
    /// passwords; at 0600 it is used; a missing file is silence.
    #[test]
    fn a_file_others_may_read_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:s3cret\n").unwrap();
        let t = target("h", 5432, "d", "u");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let found = read(&path, &t);
            assert_eq!(found.password, None, "mode {mode:o}");
            let warning = found.warning.expect("a warning");
            assert!(warning.contains("group or world access"), "{warning}");
            assert!(!warning.contains("s3cret"));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read(&path, &t),
            Lookup {
                password: Some("s3cret".into()),
                warning: None
            }
        );
        assert_eq!(read(&dir.path().join("missing"), &t), Lookup::default());
        let not_file = read(dir.path(), &t);
        assert!(not_file.warning.unwrap().contains("not a plain file"));
    }
}
