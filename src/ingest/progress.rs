//! A build's progress output, read for which step was served from cache, and which builder
//! record served it.
//!
//! `docker build --progress=plain` (Docker 20.10) prints each vertex as `#N NAME`, then
//! `#N sha256:DIGEST`, then `#N CACHED` for a cache hit; buildx prints the same without the
//! digest line, and `--progress=rawjson` prints the solve status as JSON objects, each vertex
//! with its digest, name and `cached`. From Docker 23 on, `docker build` itself runs through
//! buildx, so its plain output has no digests either: raw JSON is asked for there too, and
//! [`Render`] shows it to the user as plain-style text. A step's log lines are printed behind its own `#N` and a
//! time, so no build output can forge a `#M CACHED` line of another step. The text is hostile
//! all the same: names are cut to [`NAME_BYTES`], and at most [`STEPS`] steps are kept.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use base64::Engine as _;

use crate::model::{RecordEvidence, limits::NAME_BYTES};

/// Steps a run may record.
pub const STEPS: usize = 1000;
/// Bytes of progress output read; what is over is passed through, not read.
pub const OUTPUT_BYTES: usize = 64 << 20;

/// How the progress output is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    RawJson,
}

impl Mode {
    /// The mode a `--progress` value names; `None` for one that is not read (`tty`, `auto`,
    /// `quiet`).
    pub fn of_flag(value: &str) -> Option<Self> {
        match value {
            "plain" => Some(Self::Plain),
            "rawjson" => Some(Self::RawJson),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::RawJson => "rawjson",
        }
    }
}

/// One Dockerfile step of a build, as its progress output shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The vertex name: `[stage-0 2/4] RUN echo hi`.
    pub name: String,
    /// The vertex digest (`sha256:...`), where the output prints it.
    pub digest: Option<String>,
    pub cached: bool,
}

/// A step with the builder record that served it: `None` when it ran, or when which record
/// served it is ambiguous (unattributed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepHit {
    pub step: Step,
    pub record: Option<String>,
}

/// The Dockerfile steps in `output`, in the order they first appear; FROM and internal
/// vertices are not steps.
pub fn steps(output: &[u8], mode: Mode) -> Vec<Step> {
    let mut seen = Seen::default();
    match mode {
        Mode::Plain => {
            for line in output.split(|b| *b == b'\n') {
                let Ok(line) = std::str::from_utf8(line) else {
                    continue;
                };
                let line = line.trim_end_matches('\r');
                let Some((number, rest)) = line
                    .strip_prefix('#')
                    .and_then(|l| l.split_once(' '))
                    .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let key = number.to_owned();
                if !seen.index.contains_key(&key) {
                    // The first line of a vertex is its name.
                    seen.add(key, Some(rest), None, false);
                } else if rest == "CACHED" {
                    seen.add(key, None, None, true);
                } else if is_digest(rest) {
                    seen.add(key, None, Some(rest), false);
                }
            }
        }
        Mode::RawJson => {
            for value in json_objects(output) {
                let Some(vertexes) = value.get("vertexes").and_then(|v| v.as_array()) else {
                    continue;
                };
                for v in vertexes {
                    let Some(digest) = v.get("digest").and_then(|d| d.as_str()) else {
                        continue;
                    };
                    let cached = v.get("cached").and_then(|c| c.as_bool()) == Some(true);
                    let name = v.get("name").and_then(|n| n.as_str());
                    seen.add(digest.to_owned(), name, Some(digest), cached);
                }
            }
        }
    }
    let mut steps = seen.steps;
    steps.retain(|s| instruction(&s.name).is_some_and(|(i, _)| i != "FROM"));
    steps.truncate(STEPS);
    steps
}

/// The JSON objects of raw JSON progress, skipping whatever is not one (the client's own text
/// lines, a broken object) a line at a time, as [`Render`] does: text anywhere in the output
/// hides nothing after it.
fn json_objects(output: &[u8]) -> impl Iterator<Item = serde_json::Value> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < output.len() {
            let rest = &output[at..];
            let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
            if rest[start] == b'{' {
                let mut stream = serde_json::Deserializer::from_slice(&rest[start..])
                    .into_iter::<serde_json::Value>();
                if let Some(Ok(value)) = stream.next() {
                    at += start + stream.byte_offset();
                    return Some(value);
                }
            }
            let end = rest[start..].iter().position(|b| *b == b'\n')?;
            at += start + end + 1;
        }
        None
    })
}

/// Vertices by their key (`#N`, or the digest), in the order they first appear.
#[derive(Default)]
struct Seen {
    steps: Vec<Step>,
    index: HashMap<String, usize>,
}

impl Seen {
    fn add(&mut self, key: String, name: Option<&str>, digest: Option<&str>, cached: bool) {
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                let Some(name) = name else { return };
                // Internal vertices are kept until the end: room for them, bounded.
                if self.steps.len() >= STEPS * 4 {
                    return;
                }
                self.steps.push(Step {
                    name: bounded(name),
                    digest: None,
                    cached: false,
                });
                self.index.insert(key, self.steps.len() - 1);
                self.steps.len() - 1
            }
        };
        let step = &mut self.steps[at];
        if step.digest.is_none() {
            step.digest = digest.filter(|d| is_digest(d)).map(str::to_owned);
        }
        step.cached |= cached;
    }
}

/// Cut to [`NAME_BYTES`] on a character boundary.
fn bounded(name: &str) -> String {
    let mut end = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A step's instruction and its arguments: `[stage-0 2/4] RUN echo hi` is `("RUN", "echo hi")`.
/// `None` for a vertex that is no Dockerfile step (`[internal] ...`, `exporting to image`).
pub fn instruction(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix('[')?;
    let (label, rest) = rest.split_once("] ")?;
    if label == "internal" || label == "auth" {
        return None;
    }
    let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
    (!word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase())).then_some((word, args))
}

/// Which reused record served each cached step. BuildKit describes a `RUN` step's layer as
/// `mount / from exec ARGS` (the shell form's args are `/bin/sh -c COMMAND`), and every file
/// operation's as `fileop target`. A cached step is attributed to the one record the build
/// reused that describes it; none, several, or a record that several steps would claim, leave
/// it unattributed. A record the build created cannot have served a hit.
pub fn attribute(steps: Vec<Step>, records: Option<&RecordEvidence>) -> Vec<StepHit> {
    let reused = records.map(|r| r.reused.as_slice()).unwrap_or_default();
    let file_ops = steps
        .iter()
        .filter(|s| s.cached && matches!(instruction(&s.name), Some(("COPY" | "ADD", _))))
        .count();
    let candidates: Vec<Option<&str>> = steps
        .iter()
        .map(|step| {
            if !step.cached || records.is_none_or(|r| r.overlapped) {
                return None;
            }
            let matching: Vec<&str> = match instruction(&step.name) {
                Some(("RUN", command)) => reused
                    .iter()
                    .filter(|r| {
                        r.record_type == "regular"
                            && r.description
                                .strip_prefix("mount / from exec ")
                                .is_some_and(|args| runs(command, args))
                    })
                    .map(|r| r.id.as_str())
                    .collect(),
                Some(("COPY" | "ADD", _)) if file_ops == 1 => reused
                    .iter()
                    .filter(|r| r.record_type == "regular" && r.description == "fileop target")
                    .map(|r| r.id.as_str())
                    .collect(),
                _ => Vec::new(),
            };
            match matching.as_slice() {
                [one] => Some(*one),
                _ => None,
            }
        })
        .collect();
    steps
        .into_iter()
        .zip(&candidates)
        .map(|(step, record)| {
            let claimed =
                record.is_some_and(|r| candidates.iter().filter(|c| **c == Some(r)).count() == 1);
            StepHit {
                step,
                record: record.filter(|_| claimed).map(str::to_owned),
            }
        })
        .collect()
}

/// Whether a `RUN` step's text (`--mount=... echo hi`) runs the exec args a record names
/// (`/bin/sh -c echo hi`): the same command, behind nothing but `--` flags.
fn runs(command: &str, args: &str) -> bool {
    let exec = args.strip_prefix("/bin/sh -c ").unwrap_or(args);
    if exec.is_empty() {
        return false;
    }
    if command == exec {
        return true;
    }
    command
        .strip_suffix(exec)
        .and_then(|flags| flags.strip_suffix(' '))
        .is_some_and(|flags| flags.split(' ').all(|f| f.starts_with("--")))
}

/// Bytes of one unfinished JSON object held back before they are passed through as text.
const PENDING_BYTES: usize = 16 << 20;

/// Raw JSON progress as the text a person reads: one `#N` per vertex as plain progress numbers
/// it, its name, `CACHED`, `DONE` with its time or `ERROR`, its log lines, finished statuses and
/// warnings. Every value from the stream is escaped, and so is text that is not a JSON object
/// (the client's own error lines), a line at a time. Fed in chunks as they arrive.
#[derive(Default)]
pub struct Render {
    pending: Vec<u8>,
    /// How far the object that starts `pending` has been scanned.
    scan: Scan,
    vertices: HashMap<String, Shown>,
    statuses: HashSet<String>,
}

/// An object's bytes scanned so far for the brace that closes it, so that an object arriving
/// in many chunks is parsed once it is whole, not once per chunk (which is quadratic).
#[derive(Default)]
struct Scan {
    /// Bytes of the object scanned.
    upto: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Where the brace closing it ends, once seen.
    closed: Option<usize>,
    /// A line break was seen since the last parse (a malformed object is passed on as text
    /// a line at a time).
    line_break: bool,
    /// The pending length at the last parse.
    tried: usize,
}

impl Scan {
    fn advance(&mut self, object: &[u8]) {
        for (i, &b) in object.iter().enumerate().skip(self.upto) {
            if b == b'\n' {
                self.line_break = true;
            }
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.closed = Some(i + 1);
                        self.upto = i + 1;
                        return;
                    }
                }
                _ => {}
            }
        }
        self.upto = object.len();
    }
}

/// A line of the client's own text, escaped as every value is: it reaches a terminal too.
fn text_line(line: &[u8], out: &mut Vec<u8>) {
    use crate::report::escape::Term;
    let line = String::from_utf8_lossy(line);
    let _ = writeln!(out, "{}", Term(line.trim_end_matches('\r')));
}

/// What has been shown of one vertex.
struct Shown {
    number: usize,
    cached: bool,
    ended: bool,
}

impl Render {
    /// Reads `chunk` and appends what it shows to `out`; an object cut at the chunk's end
    /// waits for the next one.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.read(chunk, out, false);
    }

    /// [`Self::feed`]; `ending`: no more chunks come, so a cut object is parsed as it is.
    fn read(&mut self, chunk: &[u8], out: &mut Vec<u8>, ending: bool) {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        let pending = std::mem::take(&mut self.pending);
        while at < pending.len() {
            if at > 0 {
                // `at` moved past the object scanned.
                self.scan = Scan::default();
            }
            let rest = &pending[at..];
            let start = rest
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            if start == rest.len() {
                at = pending.len();
                break;
            }
            if rest[start] == b'{' {
                // Parsed when it may be whole: its closing brace arrived, or (for text that
                // only starts like an object) a line break, at most each time the pending
                // bytes double, or the limit or the end is reached.
                self.scan.advance(&rest[start..]);
                let due = self.scan.closed.is_some()
                    || ending
                    || rest.len() >= PENDING_BYTES
                    || (self.scan.line_break && rest.len() >= 2 * self.scan.tried);
                if !due {
                    break;
                }
                self.scan.tried = rest.len();
                self.scan.line_break = false;
                let mut stream = serde_json::Deserializer::from_slice(&rest[start..])
                    .into_iter::<serde_json::Value>();
                match stream.next() {
                    Some(Ok(value)) => {
                        let used = stream.byte_offset();
                        self.show(&value, out);
                        at += start + used;
                        continue;
                    }
                    Some(Err(err)) if err.is_eof() && rest.len() < PENDING_BYTES => break,
                    _ => {}
                }
            }
            // Text: passed through a whole line at a time, without the blank space that
            // separates it from the objects before it.
            match rest[start..].iter().position(|b| *b == b'\n') {
                Some(end) => {
                    text_line(&rest[start..start + end], out);
                    at += start + end + 1;
                }
                None if rest.len() >= PENDING_BYTES => {
                    text_line(&rest[start..], out);
                    at = pending.len();
                }
                None => break,
            }
        }
        if at == pending.len() {
            self.scan = Scan::default();
        }
        self.pending = pending;
        self.pending.drain(..at);
    }

    /// Shows what is left at the end of the output as text lines, escaped.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.read(&[], out, true);
        let rest = std::mem::take(&mut self.pending);
        for line in rest.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            text_line(line, out);
        }
    }

    fn show(&mut self, status: &serde_json::Value, out: &mut Vec<u8>) {
        use crate::report::escape::Term;
        let text = |v: &serde_json::Value, key: &str| {
            v.get(key)
                .and_then(|t| t.as_str())
                .map(str::to_owned)
                .unwrap_or_default()
        };
        for vertex in array(status, "vertexes") {
            let digest = text(vertex, "digest");
            if digest.is_empty() {
                continue;
            }
            let Some(number) = self.number(&digest) else {
                continue;
            };
            let shown = self.vertices.get_mut(&digest).expect("numbered");
            if number.1 {
                let _ = writeln!(out, "#{} {}", number.0, Term(&text(vertex, "name")));
            }
            if vertex.get("cached").and_then(|c| c.as_bool()) == Some(true) && !shown.cached {
                shown.cached = true;
                shown.ended = true;
                let _ = writeln!(out, "#{} CACHED", number.0);
            }
            let error = text(vertex, "error");
            let completed = text(vertex, "completed");
            if shown.ended || (error.is_empty() && completed.is_empty()) {
                continue;
            }
            shown.ended = true;
            if !error.is_empty() {
                let _ = writeln!(out, "#{} ERROR: {}", number.0, Term(&error));
            } else {
                match seconds(&text(vertex, "started"), &completed) {
                    Some(took) => {
                        let _ = writeln!(out, "#{} DONE {took:.1}s", number.0);
                    }
                    None => {
                        let _ = writeln!(out, "#{} DONE", number.0);
                    }
                }
            }
        }
        for item in array(status, "statuses") {
            let id = text(item, "id");
            if text(item, "completed").is_empty()
                || self.statuses.len() >= STEPS * 4
                || !self.statuses.insert(id.clone())
            {
                continue;
            }
            let number = self.numbered(&text(item, "vertex"));
            let _ = writeln!(out, "#{number} {} done", Term(&id));
        }
        for log in array(status, "logs") {
            let number = self.numbered(&text(log, "vertex"));
            let data = base64::engine::general_purpose::STANDARD
                .decode(text(log, "data"))
                .unwrap_or_default();
            let data = String::from_utf8_lossy(&data);
            for line in data.split('\n').filter(|l| !l.is_empty()) {
                let _ = writeln!(out, "#{number} {}", Term(line.trim_end_matches('\r')));
            }
        }
        for warning in array(status, "warnings") {
            let short = base64::engine::general_purpose::STANDARD
                .decode(text(warning, "short"))
                .unwrap_or_default();
            let _ = writeln!(out, "WARNING: {}", Term(&String::from_utf8_lossy(&short)));
        }
    }

    /// The vertex's number, and whether it is new; `None` past the vertices shown.
    fn number(&mut self, digest: &str) -> Option<(usize, bool)> {
        if let Some(shown) = self.vertices.get(digest) {
            return Some((shown.number, false));
        }
        if self.vertices.len() >= STEPS * 4 {
            return None;
        }
        let number = self.vertices.len() + 1;
        self.vertices.insert(
            digest.to_owned(),
            Shown {
                number,
                cached: false,
                ended: false,
            },
        );
        Some((number, true))
    }

    /// The number of a vertex a status or log line names, `?` for one not shown.
    fn numbered(&self, digest: &str) -> String {
        self.vertices
            .get(digest)
            .map_or_else(|| "?".to_owned(), |s| s.number.to_string())
    }
}

fn array<'a>(value: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    value
        .get(key)
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Seconds between two RFC 3339 times.
fn seconds(started: &str, completed: &str) -> Option<f64> {
    let started = chrono::DateTime::parse_from_rfc3339(started).ok()?;
    let completed = chrono::DateTime::parse_from_rfc3339(completed).ok()?;
    let micros = (completed - started).num_microseconds()?;
    (micros >= 0).then(|| micros as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BuilderRecord;

    const PLAIN: &str = "#4 [stage-0 1/3] FROM docker.io/library/base:1
#4 sha256:cb6ec6a9fa3d49de0b8d9030ce2508da0b999af4cc9d8b7ce9817eda4b3f4302
#4 DONE 0.0s

#5 [stage-0 2/3] RUN echo poisoned > /a
#5 sha256:f26026734877c2ef5bbe2ba80f7d7f12661dcda15fbd56834c449d2e59b2e9c3
#5 CACHED

#6 [stage-0 3/3] RUN --mount=type=cache,target=/c echo b > /b
#6 sha256:582ce7fe8c0f74fb5ce80693e582150b64265c5301345ffd11457b5bffdbfce5
#6 0.102 #5 CACHED
#6 DONE 0.1s
";

    fn record(id: &str, description: &str) -> BuilderRecord {
        BuilderRecord {
            id: id.into(),
            record_type: "regular".into(),
            description: description.into(),
            created_at: None,
            last_used_at: None,
            size: None,
        }
    }

    /// Plain output: the cached step is read as cached, the step that ran (and printed a
    /// forged `#5 CACHED` in its log) is not, and FROM is no step.
    #[test]
    fn plain_output_names_cached_steps() {
        let steps = steps(PLAIN.as_bytes(), Mode::Plain);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(steps[0].name, "[stage-0 2/3] RUN echo poisoned > /a");
        assert!(steps[0].cached);
        assert_eq!(
            steps[0].digest.as_deref(),
            Some("sha256:f26026734877c2ef5bbe2ba80f7d7f12661dcda15fbd56834c449d2e59b2e9c3")
        );
        assert!(!steps[1].cached);
    }

    /// Raw JSON (pretty-printed objects, as buildx prints them): vertices merge by digest.
    #[test]
    fn rawjson_output_names_cached_steps() {
        let text = r#"{
  "vertexes": [
    {"digest": "sha256:ce60a5c6799d0d6c7afa8e0ed57872f6753ef7e8095f36f0273812cb094fafbc",
     "name": "[stage-0 2/4] RUN echo a", "started": "x"}
  ]
}
{"vertexes": [{"digest": "sha256:ce60a5c6799d0d6c7afa8e0ed57872f6753ef7e8095f36f0273812cb094fafbc",
  "name": "[stage-0 2/4] RUN echo a", "cached": true},
  {"digest": "sha256:16a573ad041211891096b342db6a7d95cbb068c15023c199c45867a975edc8be",
   "name": "[internal] load build context"}]}
"#;
        let steps = steps(text.as_bytes(), Mode::RawJson);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(steps[0].cached);
        assert_eq!(steps[0].name, "[stage-0 2/4] RUN echo a");
    }

    /// Text before, between and inside the raw JSON objects (a client warning, a broken
    /// object) hides none of the steps after it.
    #[test]
    fn rawjson_text_lines_hide_no_steps() {
        let vertex = |n: &str, name: &str| {
            format!(
                r#"{{"vertexes": [{{"digest": "sha256:{n}", "name": "{name}", "cached": true}}]}}"#
            )
        };
        let text = format!(
            "WARNING: current commit information was not captured by the build: git was not found\n\
             {}\n{{\"vertexes\": [broken\nnot json either {{\n{}\n",
            vertex("aa", "[1/2] RUN echo a"),
            vertex("bb", "[2/2] RUN echo b"),
        );
        let names: Vec<String> = steps(text.as_bytes(), Mode::RawJson)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, vec!["[1/2] RUN echo a", "[2/2] RUN echo b"]);
    }

    /// A hostile step name is cut to the name limit on a character boundary.
    #[test]
    fn long_names_are_cut() {
        let text = format!("#5 [1/2] RUN {}\n#5 CACHED\n", "é".repeat(2000));
        let steps = steps(text.as_bytes(), Mode::Plain);
        assert!(steps[0].name.len() <= NAME_BYTES);
    }

    /// A cached RUN step is attributed to the one reused record running its command; a
    /// command two reused records run is unattributed; a step that ran is never attributed.
    #[test]
    fn hits_are_attributed_only_when_unambiguous() {
        let steps = steps(PLAIN.as_bytes(), Mode::Plain);
        let mut evidence = RecordEvidence {
            reused: vec![
                record("r1", "mount / from exec /bin/sh -c echo poisoned > /a"),
                record("r2", "mount / from exec /bin/sh -c echo b > /b"),
            ],
            ..RecordEvidence::default()
        };
        let hits = attribute(steps.clone(), Some(&evidence));
        assert_eq!(hits[0].record.as_deref(), Some("r1"));
        assert_eq!(hits[1].record, None);
        evidence.reused.push(record(
            "r3",
            "mount / from exec /bin/sh -c echo poisoned > /a",
        ));
        assert_eq!(attribute(steps.clone(), Some(&evidence))[0].record, None);
        assert_eq!(attribute(steps, None)[0].record, None);
    }

    /// The `--mount` flags of a RUN step are not part of the command its record runs; other
    /// text in front of it is.
    #[test]
    fn run_flags_are_skipped() {
        assert!(runs(
            "--mount=type=cache,target=/c echo b",
            "/bin/sh -c echo b"
        ));
        assert!(!runs("curl x | sh; echo b", "/bin/sh -c echo b"));
        assert!(!runs("echo b", "/bin/sh -c "));
    }

    /// Raw JSON progress is shown as plain-style text: one number per vertex, its name once,
    /// CACHED, DONE, its log lines, with hostile text escaped, and an object cut between two
    /// chunks waits for the rest; the client's own text lines pass through.
    #[test]
    fn rawjson_is_rendered_as_text() {
        let log = base64::engine::general_purpose::STANDARD.encode("hi\n\u{1b}[2J\n");
        let text = format!(
            r#"{{"vertexes": [{{"digest": "sha256:aa", "name": "[1/2] RUN echo \u001b[2J", "started": "2026-01-01T00:00:00Z"}}]}}
{{"vertexes": [{{"digest": "sha256:bb", "name": "[2/2] RUN b", "cached": true}}],
  "logs": [{{"vertex": "sha256:aa", "stream": 1, "data": "{log}"}}]}}
{{"vertexes": [{{"digest": "sha256:aa", "name": "[1/2] RUN echo \u001b[2J", "started": "2026-01-01T00:00:00Z", "completed": "2026-01-01T00:00:01.5Z"}}]}}
ERROR: failed to solve
"#
        );
        let mut render = Render::default();
        let mut out = Vec::new();
        let (a, b) = text.as_bytes().split_at(40);
        render.feed(a, &mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        render.feed(b, &mut out);
        render.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#1 [1/2] RUN echo \\x1b[2J\n#2 [2/2] RUN b\n#2 CACHED\n#1 hi\n#1 \\x1b[2J\n#1 DONE 1.5s\nERROR: failed to solve\n"
        );
    }

    /// An object arriving in many small chunks (a large log) is shown once whole, as if fed
    /// at once, and braces inside its strings do not end it early; a line that only starts
    /// like an object is passed on as text when its line ends.
    #[test]
    fn rawjson_in_small_chunks_renders_as_whole() {
        let log = base64::engine::general_purpose::STANDARD.encode("x".repeat(300_000) + "\n");
        let text = format!(
            r#"{{"vertexes": [{{"digest": "sha256:aa", "name": "[1/1] RUN {{]}}\"", "started": "2026-01-01T00:00:00Z"}}], "logs": [{{"vertex": "sha256:aa", "stream": 1, "data": "{log}"}}]}}
{{not json
"#
        );
        let whole = {
            let mut render = Render::default();
            let mut out = Vec::new();
            render.feed(text.as_bytes(), &mut out);
            out
        };
        let mut render = Render::default();
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(100) {
            render.feed(chunk, &mut out);
        }
        assert_eq!(out, whole);
        let shown = String::from_utf8(out).unwrap();
        assert!(
            shown.starts_with("#1 [1/1] RUN {]}\"\n#1 xxx"),
            "{}",
            &shown[..40]
        );
        assert!(
            shown.ends_with("x\n{not json\n"),
            "{}",
            &shown[shown.len() - 40..]
        );
    }

    /// The client's text lines between the objects, and an object cut off at the end, reach
    /// the terminal escaped, backslashes too, so none can drive it or forge an escape.
    #[test]
    fn rawjson_text_lines_are_escaped() {
        let mut render = Render::default();
        let mut out = Vec::new();
        render.feed(
            b"evil \x1b]0;title\x07 \\x1b\r\n{\"cut\": \"\x1b[2J",
            &mut out,
        );
        render.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "evil \\x1b]0;title\\x07 \\\\x1b\n{\"cut\": \"\\x1b[2J\n"
        );
    }
}
