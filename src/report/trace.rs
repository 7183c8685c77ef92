//! Output of `cachewarden trace`: text, JSON (`schema/trace.schema.json`), Graphviz, and the
//! `--explain` chain.
//!
//! The JSON items are written by `Object`, not by `serde_json`, on measurement. The same
//! documents derived `Serialize` and written per item with `serde_json::to_writer` (same
//! two-thread chunking) gave byte-identical output on the 1M-run benchmark fleet
//! (`benches/trace.sh`), but wrote the 668 MB trace of `p50` more slowly: over 12 interleaved
//! runs on a shared 2-core machine the write phase took 1.41 s median (1.14 s best) by hand
//! and 1.64 s median (1.41 s best) through serde, about a fifth more; `p17` (237 MB) was even
//! (0.53 s and 0.51 s). Almost no string here needs escaping, so `push_json_str` checks
//! for that once (any byte past ASCII counts as needing it) and copies the bytes whole, where
//! serde_json scans them byte by byte; a test holds the escaping to `report::json`'s, which
//! decodes to serde_json's.

use std::io::{self, Write};

use compact_str::CompactString;
use petgraph::graph::NodeIndex;

use crate::graph::{AppliedPurge, Entity, Hop, Kind, Tainted, Trace};
use crate::model::{PurgeMethod, PurgeTarget};
use crate::report::escape::{Short, Term};
use crate::report::json;
use crate::time::{self, Micros, Rfc3339};

/// The JSON shape's version; bumped on any incompatible change to the schema.
pub const SCHEMA_VERSION: u32 = 1;

/// How many seeds the text header names before it only counts them (a pipeline seed can
/// select thousands of runs; they are all listed under `runs`).
const SEEDS_SHOWN: usize = 5;

/// Marks a run recorded without what was over a limit: its blast radius may be larger.
const TRUNCATED: &str = "  [truncated: inputs over a limit were not recorded]";
/// After a run whose own times are not believed: the collector received it at odds with them,
/// or the store held a purge it claims to predate.
const TIME_SUSPECT: &str = "  [time-suspect: its times contradict when it was received, or a purge the store held when it was recorded]";
/// After a seed run whose writes count from before the start it claims.
const RECEIPT_BOUND: &str = "the earliest start its receipt allows";
/// After a seed run sent with a static token, whose writes count from any time.
const WRITES_UNBOUNDED: &str = "  [writes counted from any time: its static token bounds nothing]";

const EMPTY: &str =
    "empty blast radius: no runs, caches, mounts or images are downstream of the seeds";

/// The formats a trace is written in; the command line offers each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Counts per kind, then the tainted entities with when and how each became tainted.
    #[default]
    Text,
    /// JSON, shape in `schema/trace.schema.json`.
    Json,
    /// Graphviz of the blast-radius subgraph, seeds highlighted.
    Dot,
}

/// Writes the trace in the chosen format. Output is buffered here: a blast radius can run to
/// hundreds of thousands of lines, and stdout is line-buffered.
pub fn write(trace: &Trace, format: Format, out: &mut dyn Write) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    match format {
        Format::Text => write_text(trace, &mut out),
        Format::Json => write_json(trace, &mut out),
        Format::Dot => write_dot(trace, &mut out),
    }?;
    out.flush()
}

fn group_title(kind: Kind) -> &'static str {
    match kind {
        Kind::Run => "runs",
        Kind::CacheRef => "cache refs",
        Kind::Mount => "mounts",
        Kind::Builder => "builders",
        Kind::Image => "images",
        Kind::Record => "builder records",
    }
}

fn count(n: usize, kind: Kind) -> String {
    let plural = group_title(kind);
    if n == 1 {
        format!("1 {}", plural.strip_suffix('s').unwrap_or(plural))
    } else {
        format!("{n} {plural}")
    }
}

/// Counts per kind, then each group with when and how every entity became tainted.
pub fn write_text(trace: &Trace, out: &mut dyn Write) -> io::Result<()> {
    let seeds: Vec<String> = trace
        .seeds()
        .iter()
        .map(|n| Short(&n.name()).to_string())
        .collect();
    match seeds.len() {
        0 => writeln!(out, "seeds: none matched")?,
        n if n <= SEEDS_SHOWN => writeln!(out, "seeds: {}", seeds.join(", "))?,
        n => writeln!(
            out,
            "seeds: {} and {} more",
            seeds[..SEEDS_SHOWN].join(", "),
            n - SEEDS_SHOWN
        )?,
    }
    if trace.is_empty() {
        writeln!(out, "{EMPTY}")?;
        return write_purges_text(trace, out);
    }
    let groups = trace.groups();
    let counts: Vec<String> = groups
        .iter()
        .map(|(k, entries)| count(entries.len(), *k))
        .collect();
    let mode = match (trace.ignore_time(), trace.ignore_purges()) {
        (true, true) => " (time and purges ignored)",
        (true, false) => " (time ignored)",
        (false, true) => " (purges ignored)",
        (false, false) => "",
    };
    writeln!(out, "blast radius{mode}: {}", counts.join(", "))?;
    write_purges_text(trace, out)?;
    for (kind, entries) in groups.iter().filter(|(_, e)| !e.is_empty()) {
        writeln!(out, "\n{}:", group_title(*kind))?;
        let mut name = String::new();
        let width = entries
            .iter()
            .map(|e| {
                name.clear();
                e.write_name(&mut name);
                Short(&name).text_and_width().1
            })
            .max()
            .unwrap_or(0);
        write_rendered(out, entries, |buf, _, entry| {
            text_line(buf, entry, width, earlier_writes(trace, entry));
        })?;
    }
    Ok(())
}

/// The purges the trace applied, each on one line: what it cleaned, when, how it was
/// recorded and by whom, and what it kept out of the blast radius. Every recorded purge
/// narrows the blast radius, so none is applied silently.
fn write_purges_text(trace: &Trace, out: &mut dyn Write) -> io::Result<()> {
    let purges = trace.purges();
    if purges.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\npurges applied ({}; `--ignore-purges` shows what they hid):",
        purges.len()
    )?;
    for applied in purges {
        writeln!(out, "  {}", purge_line(applied))?;
    }
    Ok(())
}

/// `TIME  purge ID of TARGET  METHOD by AUTHOR, recorded T[; FORCED ...]; cleaned ...`.
pub fn purge_line(applied: &AppliedPurge) -> String {
    let p = &applied.purge;
    let target = match &p.target {
        PurgeTarget::Mount { builder, mount, .. } => {
            format!("mount {} on {}", Term(mount), Term(builder))
        }
        PurgeTarget::Builder {
            builder,
            records_only,
            selective,
        } => {
            let what = match (selective, records_only) {
                (Some(selective), _) => format!(
                    " ({}{}, not cache mounts)",
                    crate::report::count(
                        selective.records.len(),
                        "named build record",
                        "named build records"
                    ),
                    match selective.used_since() {
                        _ if selective.every_record() => " and every build record".to_owned(),
                        Some(since) =>
                            format!(" and build records used since {}", time::format(since)),
                        None => String::new(),
                    }
                ),
                (None, true) => " (build records, not cache mounts)".to_owned(),
                (None, false) => String::new(),
            };
            format!("builder {}{what}", Term(builder))
        }
    };
    // Recorded values in backticks, which `Term` escapes inside them: an author or reason
    // cannot close its quotes and write on as the line's own words.
    let author = if p.author.is_empty() {
        "an unknown author".to_owned()
    } else {
        format!("`{}`", Term(&p.author))
    };
    let recorded = p
        .recorded_at
        .map_or("at an unknown time".to_owned(), time::format);
    let mut line = format!(
        "{}  purge {} of {target}  {}",
        time::format(p.at),
        p.id,
        p.method.as_str()
    );
    if let Some((incident, seq)) = p.action {
        line.push_str(&format!(" (incident {incident} action {seq})"));
    }
    line.push_str(&format!(" by {author}, recorded {recorded}"));
    if let Some(claim) = p
        .claimed
        .as_ref()
        .filter(|_| p.method == PurgeMethod::Imported)
    {
        line.push_str(&format!(
            " (its line claims {} by {}, recorded {})",
            claim
                .method
                .as_deref()
                .map_or("nothing".into(), |m| format!("`{}`", Term(m))),
            claim
                .author
                .as_deref()
                .map_or("nobody".into(), |a| format!("`{}`", Term(a))),
            claim
                .recorded_at
                .map_or("at no time".to_owned(), time::format)
        ));
    }
    if p.forced {
        line.push_str("; FORCED late entry");
    }
    if let Some(reason) = &p.reason {
        line.push_str(&format!("; reason: `{}`", Term(reason)));
    }
    let cleaned: Vec<String> = applied
        .cleaned
        .iter()
        .map(|n| Term(n).to_string())
        .collect();
    let runs = if applied.runs == 1 { "run" } else { "runs" };
    line.push_str(&format!(
        "; cleaned {} for {} later {runs}, {} kept out of the blast radius",
        cleaned.join(", "),
        applied.runs,
        applied.kept_out
    ));
    line
}

/// For a run whose writes count from before the start it claims (a seed run the collector
/// received): from when.
fn earlier_writes(trace: &Trace, entry: &Tainted<'_>) -> Option<Micros> {
    match entry.entity {
        Entity::Run { info } if !info.time_suspect => {
            Some(trace.writes_from(info)).filter(|&from| from < info.started_at)
        }
        _ => None,
    }
}

/// `  TIME  NAME  VIA[ from FROM]`, the name padded to `width` characters. Names are shown
/// escaped and shortened ([`Short`]): one entity a line, whatever the store holds. A run whose
/// writes count from before its claimed start (`writes_from`) says so.
fn text_line(buf: &mut Vec<u8>, entry: &Tainted<'_>, width: usize, writes_from: Option<Micros>) {
    with_names(entry, |name, from| {
        text_line_named(buf, entry, (name, from), width, writes_from)
    });
}

fn text_line_named(
    buf: &mut Vec<u8>,
    entry: &Tainted<'_>,
    (name, from): (&str, Option<&str>),
    width: usize,
    writes_from: Option<Micros>,
) {
    buf.extend_from_slice(b"  ");
    write!(buf, "{}", Rfc3339(entry.tainted_at)).expect("writing to memory");
    buf.extend_from_slice(b"  ");
    let (name, name_width) = Short(name).text_and_width();
    buf.extend_from_slice(name.as_bytes());
    let padding = width.saturating_sub(name_width);
    buf.resize(buf.len() + padding, b' ');
    buf.extend_from_slice(b"  ");
    buf.extend_from_slice(entry.via.as_str().as_bytes());
    if let Some(from) = from {
        buf.extend_from_slice(b" from ");
        buf.extend_from_slice(Short(from).text_and_width().0.as_bytes());
    }
    if let Entity::Run { info, .. } = entry.entity {
        if info.truncated {
            buf.extend_from_slice(TRUNCATED.as_bytes());
        }
        if info.time_suspect {
            buf.extend_from_slice(TIME_SUSPECT.as_bytes());
        }
    }
    match writes_from {
        Some(Micros::MIN) => buf.extend_from_slice(WRITES_UNBOUNDED.as_bytes()),
        Some(from) => write!(
            buf,
            "  [writes counted from {}: {RECEIPT_BOUND}]",
            Rfc3339(from)
        )
        .expect("writing to memory"),
        None => {}
    }
    buf.push(b'\n');
}

/// One hop a line: `TIME  KIND  FROM -> TO`; the first line is the seed.
pub fn write_explain(hops: &[Hop], out: &mut dyn Write) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    let width = hops.iter().map(|h| h.via.as_str().len()).max().unwrap_or(0);
    for hop in hops {
        let at = time::format(hop.at);
        let kind = hop.via.as_str();
        match &hop.from {
            Some(from) => writeln!(
                out,
                "{at}  {kind:width$}  {} -> {}",
                Short(from),
                Short(&hop.to)
            )?,
            None => writeln!(out, "{at}  {kind:width$}  {}", Short(&hop.to))?,
        }
    }
    out.flush()
}

/// The JSON document: `schema/trace.schema.json` describes it.
/// One entity a line: a large blast radius stays greppable, and is rendered on two threads.
pub fn write_json(trace: &Trace, out: &mut dyn Write) -> io::Result<()> {
    let seeds: Vec<SeedDoc> = trace
        .seeds()
        .into_iter()
        .map(|n| SeedDoc {
            kind: n.seed.as_deref().map_or(Kind::Run, |s| s.kind).as_str(),
            name: n.name(),
        })
        .collect();
    let groups = trace.groups();
    writeln!(out, "{{")?;
    writeln!(out, "  \"schema_version\": {SCHEMA_VERSION},")?;
    writeln!(out, "  \"ignore_time\": {},", trace.ignore_time())?;
    writeln!(out, "  \"ignore_purges\": {},", trace.ignore_purges())?;
    write_array(out, "seeds", &seeds, false, |o, seed| seed.write(o))?;
    write_purges_json(trace.purges(), out)?;
    for (kind, entries) in &groups {
        let (field, doc): (&str, WriteDoc) = match kind {
            Kind::Run => ("runs", run_doc),
            Kind::CacheRef => ("cache_refs", artifact_doc),
            Kind::Mount => ("mounts", mount_doc),
            Kind::Builder => ("builders", builder_doc),
            Kind::Image => ("images", artifact_doc),
            Kind::Record => ("records", record_doc),
        };
        write_array(out, field, entries, *kind == Kind::Record, |o, e| {
            with_names(e, |name, from| doc(o, e, name, from));
        })?;
    }
    writeln!(out, "}}")
}

/// `"purges": [...]`, a purge a line: few, so written through serde.
fn write_purges_json(purges: &[AppliedPurge], out: &mut dyn Write) -> io::Result<()> {
    if purges.is_empty() {
        return writeln!(out, "  \"purges\": [],");
    }
    writeln!(out, "  \"purges\": [")?;
    for (i, applied) in purges.iter().enumerate() {
        write!(out, "    ")?;
        json::to_writer(&mut *out, &purge_doc(applied))?;
        writeln!(out, "{}", if i + 1 == purges.len() { "" } else { "," })?;
    }
    writeln!(out, "  ],")
}

/// One applied purge as `schema/trace.schema.json` describes it.
fn purge_doc(applied: &AppliedPurge) -> serde_json::Value {
    let p = &applied.purge;
    let (kind, builder, mount, records_only, selective) = match &p.target {
        PurgeTarget::Mount { builder, mount, .. } => ("mount", builder, Some(mount), false, None),
        PurgeTarget::Builder {
            builder,
            records_only,
            selective,
        } => ("builder", builder, None, *records_only, selective.as_ref()),
    };
    serde_json::json!({
        "id": p.id,
        "kind": kind,
        "builder": builder,
        "mount": mount,
        "records_only": records_only,
        "selective": selective.map(|s| serde_json::json!({
            "records": s.records,
            "every_record": s.every_record(),
            "since": s.used_since().map(time::format),
            "skew_seconds": s.skew_seconds(),
        })),
        "at": time::format(p.at),
        "method": p.method.as_str(),
        "author": Some(&p.author).filter(|a| !a.is_empty()),
        "recorded_at": p.recorded_at.map(time::format),
        "forced": p.forced,
        "reason": p.reason,
        "source": p.source,
        "incident": p.action.map(|a| a.0),
        "action": p.action.map(|a| a.1),
        "claimed": p.claimed.as_ref().map(|c| serde_json::json!({
            "method": c.method,
            "author": c.author,
            "recorded_at": c.recorded_at.map(time::format),
        })),
        "cleaned": applied.cleaned,
        "runs": applied.runs,
        "kept_out": applied.kept_out,
    })
}

/// Writes one tainted entry's document, given its name and the name its evidence came from.
type WriteDoc = fn(&mut Object<'_>, &Tainted<'_>, &str, Option<&str>);

/// Writes `"name": [...]`, an item a line, each as the JSON of the document `doc` makes of it
/// (made as the item is written: a document per item would be hundreds of megabytes).
fn write_array<T: Sync>(
    out: &mut dyn Write,
    name: &str,
    items: &[T],
    last: bool,
    doc: impl Fn(&mut Object<'_>, &T) + Sync,
) -> io::Result<()> {
    let end = if last { "" } else { "," };
    if items.is_empty() {
        return writeln!(out, "  \"{name}\": []{end}");
    }
    writeln!(out, "  \"{name}\": [")?;
    let last_item = items.len() - 1;
    write_rendered(out, items, |buf, i, item| {
        json_item_with(buf, i == last_item, |o| doc(o, item));
    })?;
    writeln!(out, "  ]{end}")
}

/// One item of a JSON array, on its own line.
fn json_item_with(buf: &mut Vec<u8>, last: bool, write: impl FnOnce(&mut Object<'_>)) {
    buf.extend_from_slice(b"    ");
    let mut object = Object::new(buf);
    write(&mut object);
    object.end();
    buf.extend_from_slice(if last { b"\n" } else { b",\n" });
}

/// Items rendered as one block: big enough that handing blocks between threads costs
/// nothing, small enough that the blocks in flight hold a few megabytes.
const BLOCK: usize = 1 << 14;

/// Writes the items in order, each as `render` renders it (given its position). Blocks of
/// items are rendered on two threads, this one taking the even blocks and writing every
/// block in order, the other the odd ones, at most two blocks ahead: the output streams
/// out as it is rendered instead of half of it being held in memory.
fn write_rendered<T: Sync>(
    out: &mut dyn Write,
    items: &[T],
    render: impl Fn(&mut Vec<u8>, usize, &T) + Sync,
) -> io::Result<()> {
    let render_block = |block: usize| {
        let start = block * BLOCK;
        let mut chunks = Vec::new();
        render_items(
            &items[start..items.len().min(start + BLOCK)],
            |buf, i, item| render(buf, start + i, item),
            |chunk| {
                chunks.push(chunk);
                Ok(())
            },
        )
        .map(|()| chunks)
    };
    let blocks = items.len().div_ceil(BLOCK);
    if blocks <= 1 {
        return render_items(items, &render, |chunk| out.write_all(&chunk));
    }
    std::thread::scope(|scope| {
        let (odd_tx, odd_rx) = std::sync::mpsc::sync_channel(2);
        let render_block = &render_block;
        scope.spawn(move || {
            for block in (1..blocks).step_by(2) {
                // The writer stopped (it failed): nothing more is wanted.
                if odd_tx.send(render_block(block)).is_err() {
                    break;
                }
            }
        });
        for block in (0..blocks).step_by(2) {
            for chunk in render_block(block)? {
                out.write_all(&chunk)?;
            }
            if block + 1 < blocks {
                let odd = odd_rx.recv().expect("rendering thread panicked")?;
                for chunk in odd {
                    out.write_all(&chunk)?;
                }
            }
        }
        Ok(())
    })
}

/// Renders the items, handing each chunk of about 64 KiB to `sink`.
fn render_items<T>(
    items: &[T],
    render: impl Fn(&mut Vec<u8>, usize, &T),
    mut sink: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    const CHUNK: usize = 1 << 16;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    for (i, item) in items.iter().enumerate() {
        render(&mut buf, i, item);
        if buf.len() >= CHUNK {
            sink(std::mem::replace(
                &mut buf,
                Vec::with_capacity(CHUNK + 4096),
            ))?;
        }
    }
    sink(buf)
}

/// An item of the JSON document, written as compact JSON.
trait Json {
    fn write(&self, object: &mut Object<'_>);
}

/// One JSON object being written: `{"key":value,...}`, the compact form with keys in the
/// order they are given. The trace writes hundreds of megabytes of these, and almost none of
/// its strings need escaping: those are copied whole.
struct Object<'b> {
    out: &'b mut Vec<u8>,
    empty: bool,
}

impl<'b> Object<'b> {
    fn new(out: &'b mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        push_json_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        push_json_str(self.key(key), value);
        self
    }

    /// A string, or `null`.
    fn opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => {
                self.key(key).extend_from_slice(b"null");
                self
            }
        }
    }

    fn time(&mut self, key: &str, at: Rfc3339) -> &mut Self {
        let out = self.key(key);
        out.push(b'"');
        write!(out, "{at}").expect("writing to memory");
        out.push(b'"');
        self
    }

    fn strs(&mut self, key: &str, values: &[CompactString]) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(out, value);
        }
        out.push(b']');
        self
    }

    fn object(&mut self, key: &str, value: &impl Json) -> &mut Self {
        let mut inner = Object::new(self.key(key));
        value.write(&mut inner);
        inner.end();
        self
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Whether a byte sends a JSON string to the slow path: one JSON escapes, or one of a
/// character past ASCII, which may be one [`json::escapes`].
fn needs_escape(byte: u8) -> bool {
    // Below 0x20 or from 0x80 on, in one comparison.
    byte.wrapping_sub(0x20) >= 0x60 || byte == b'"' || byte == b'\\'
}

/// Whether no byte needs escaping. Sixteen bytes are checked at a time without stopping
/// early, which the compiler turns into vector compares: a trace's strings are long (digests,
/// registry refs) and almost never need escaping.
fn is_clean(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk
            .iter()
            .fold(false, |dirty, &b| dirty | needs_escape(b))
        {
            return false;
        }
    }
    !chunks.remainder().iter().any(|&b| needs_escape(b))
}

/// Appends `value` as a JSON string, escaped as [`json`] escapes it: as `serde_json` does,
/// and C1, bidi and invisible characters as `\uXXXX`.
fn push_json_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.push(b'"');
    if is_clean(bytes) {
        out.extend_from_slice(bytes);
    } else {
        let mut buf = [0u8; 4];
        for c in value.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                c if c < ' ' || json::escapes(c) => json::push_unicode_escape(out, c),
                c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
    }
    out.push(b'"');
}

#[derive(Debug, Clone)]
struct SeedDoc {
    kind: &'static str,
    name: CompactString,
}

#[derive(Debug)]
struct ViaDoc<'t> {
    kind: &'static str,
    /// The entity the evidence came from; `null` for a seed.
    from: Option<&'t str>,
    at: Rfc3339,
}

#[derive(Debug)]
struct RunDoc<'t> {
    name: &'t str,
    pipeline: &'t str,
    run: &'t str,
    step: &'t str,
    builder: Option<&'t str>,
    status: &'static str,
    started_at: Rfc3339,
    finished_at: Rfc3339,
    tainted_at: Rfc3339,
    via: ViaDoc<'t>,
    /// Written only when set, so runs within the limits read as before.
    truncated: bool,
    /// Written only when set.
    time_suspect: bool,
}

#[derive(Debug)]
struct ArtifactDoc<'t> {
    name: &'t str,
    backend: &'static str,
    locator: &'t str,
    digest: Option<&'t str>,
    key: Option<&'t str>,
    tags: &'t [CompactString],
    tainted_at: Rfc3339,
    via: ViaDoc<'t>,
}

#[derive(Debug)]
struct MountDoc<'t> {
    name: &'t str,
    builder: &'t str,
    namespace: &'t str,
    id: &'t str,
    tainted_at: Rfc3339,
    via: ViaDoc<'t>,
}

#[derive(Debug)]
struct BuilderDoc<'t> {
    name: &'t str,
    builder: &'t str,
    tainted_at: Rfc3339,
    via: ViaDoc<'t>,
}

#[derive(Debug)]
struct RecordDoc<'t> {
    name: &'t str,
    builder: &'t str,
    record_id: &'t str,
    record_type: &'t str,
    description: &'t str,
    tainted_at: Rfc3339,
    via: ViaDoc<'t>,
}

impl Json for SeedDoc {
    fn write(&self, o: &mut Object<'_>) {
        o.str("kind", self.kind).str("name", &self.name);
    }
}

impl Json for ViaDoc<'_> {
    fn write(&self, o: &mut Object<'_>) {
        o.str("kind", self.kind)
            .opt("from", self.from)
            .time("at", self.at);
    }
}

impl Json for RunDoc<'_> {
    fn write(&self, o: &mut Object<'_>) {
        o.str("name", self.name)
            .str("pipeline", self.pipeline)
            .str("run", self.run)
            .str("step", self.step)
            .opt("builder", self.builder)
            .str("status", self.status)
            .time("started_at", self.started_at)
            .time("finished_at", self.finished_at)
            .time("tainted_at", self.tainted_at)
            .object("via", &self.via);
        if self.truncated {
            o.key("truncated").extend_from_slice(b"true");
        }
        if self.time_suspect {
            o.key("time_suspect").extend_from_slice(b"true");
        }
    }
}

impl Json for ArtifactDoc<'_> {
    fn write(&self, o: &mut Object<'_>) {
        o.str("name", self.name)
            .str("backend", self.backend)
            .str("locator", self.locator)
            .opt("digest", self.digest)
            .opt("key", self.key)
            .strs("tags", self.tags)
            .time("tainted_at", self.tainted_at)
            .object("via", &self.via);
    }
}

impl Json for MountDoc<'_> {
    fn write(&self, o: &mut Object<'_>) {
        o.str("name", self.name)
            .str("builder", self.builder)
            .str("namespace", self.namespace)
            .str("id", self.id)
            .time("tainted_at", self.tainted_at)
            .object("via", &self.via);
    }
}

impl Json for BuilderDoc<'_> {
    fn write(&self, o: &mut Object<'_>) {
        o.str("name", self.name)
            .str("builder", self.builder)
            .time("tainted_at", self.tainted_at)
            .object("via", &self.via);
    }
}

impl Json for RecordDoc<'_> {
    fn write(&self, o: &mut Object<'_>) {
        o.str("name", self.name)
            .str("builder", self.builder)
            .str("record_id", self.record_id)
            .str("type", self.record_type)
            .str("description", self.description)
            .time("tainted_at", self.tainted_at)
            .object("via", &self.via);
    }
}

thread_local! {
    /// The names [`with_names`] makes, kept for the next entry this thread renders.
    static NAMES: std::cell::RefCell<(String, String)> = std::cell::RefCell::default();
}

/// Calls `f` with the entry's name and the name of the entity its evidence came from, made
/// into buffers this thread keeps: names are made as they are written, never all at once.
fn with_names<R>(e: &Tainted<'_>, f: impl FnOnce(&str, Option<&str>) -> R) -> R {
    NAMES.with_borrow_mut(|(name, from)| {
        name.clear();
        e.write_name(name);
        from.clear();
        let from = e.from.map(|node| {
            node.entity.write_name(from);
            from.as_str()
        });
        f(name, from)
    })
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn via_doc<'a>(e: &Tainted<'_>, from: Option<&'a str>) -> ViaDoc<'a> {
    ViaDoc {
        kind: e.via.as_str(),
        from,
        at: Rfc3339(e.at),
    }
}

/// The group an entry is listed in holds only entities of its kind ([`Entity::is`]).
const IN_ITS_GROUP: &str = "a group lists only entities of its kind";

fn run_doc(o: &mut Object<'_>, e: &Tainted<'_>, name: &str, from: Option<&str>) {
    let Entity::Run { info } = e.entity else {
        unreachable!("{IN_ITS_GROUP}");
    };
    RunDoc {
        name,
        pipeline: &info.pipeline,
        run: &info.run_key,
        step: &info.step,
        builder: e.builder,
        status: info.status.as_str(),
        started_at: Rfc3339(info.started_at),
        finished_at: Rfc3339(info.finished_at),
        tainted_at: Rfc3339(e.tainted_at),
        via: via_doc(e, from),
        truncated: info.truncated,
        time_suspect: info.time_suspect,
    }
    .write(o);
}

fn artifact_doc(o: &mut Object<'_>, e: &Tainted<'_>, name: &str, from: Option<&str>) {
    let Entity::Artifact { info, .. } = e.entity else {
        unreachable!("{IN_ITS_GROUP}");
    };
    ArtifactDoc {
        name,
        backend: info.backend.as_str(),
        locator: &info.locator,
        digest: non_empty(&info.digest),
        key: non_empty(&info.key),
        tags: &info.tags,
        tainted_at: Rfc3339(e.tainted_at),
        via: via_doc(e, from),
    }
    .write(o);
}

fn mount_doc(o: &mut Object<'_>, e: &Tainted<'_>, name: &str, from: Option<&str>) {
    let Entity::Mount(info) = e.entity else {
        unreachable!("{IN_ITS_GROUP}");
    };
    MountDoc {
        name,
        builder: &info.builder_name,
        namespace: &info.namespace,
        id: &info.mount_id,
        tainted_at: Rfc3339(e.tainted_at),
        via: via_doc(e, from),
    }
    .write(o);
}

fn builder_doc(o: &mut Object<'_>, e: &Tainted<'_>, name: &str, from: Option<&str>) {
    let Entity::Builder(info) = e.entity else {
        unreachable!("{IN_ITS_GROUP}");
    };
    BuilderDoc {
        name,
        builder: &info.name,
        tainted_at: Rfc3339(e.tainted_at),
        via: via_doc(e, from),
    }
    .write(o);
}

fn record_doc(o: &mut Object<'_>, e: &Tainted<'_>, name: &str, from: Option<&str>) {
    let Entity::Record { info, builder } = e.entity else {
        unreachable!("{IN_ITS_GROUP}");
    };
    RecordDoc {
        name,
        builder,
        record_id: &info.record_id,
        record_type: &info.record_type,
        description: &info.description,
        tainted_at: Rfc3339(e.tainted_at),
        via: via_doc(e, from),
    }
    .write(o);
}

/// Graphviz of the blast radius: every tainted entity and seed, every evidence edge labelled
/// with its kind, seeds filled.
pub fn write_dot(trace: &Trace, out: &mut dyn Write) -> io::Result<()> {
    debug_assert!(trace.has_evidence(), "drew a trace without its evidence");
    let g = trace.graph();
    let mut nodes: Vec<_> = g.node_indices().collect();
    let when = |i: NodeIndex| g[i].label.map(|l| l.tainted_at);
    nodes.sort_by_cached_key(|&node| (when(node), g[node].name()));
    let mut ids = vec![usize::MAX; g.node_count()];
    for (id, &node) in nodes.iter().enumerate() {
        ids[node.index()] = id;
    }
    writeln!(out, "digraph blast_radius {{")?;
    writeln!(out, "  rankdir=LR;")?;
    writeln!(out, "  node [fontname=\"monospace\"];")?;
    for &node in &nodes {
        let n = &g[node];
        let time = n
            .label
            .map_or_else(|| "seed".to_owned(), |l| time::format(l.tainted_at));
        let shape = match n.entity {
            Entity::Run { .. } => "box",
            Entity::Artifact { .. } | Entity::Digest { .. } => "note",
            Entity::Mount(_) => "cylinder",
            Entity::Builder(_) => "component",
            Entity::Record { .. } => "folder",
        };
        let fill = if n.seed.is_some() {
            " style=filled fillcolor=\"#f4a582\""
        } else {
            ""
        };
        writeln!(
            out,
            "  n{} [label=\"{}\\n{}\" shape={shape}{fill}];",
            ids[node.index()],
            dot_escape(&n.name()),
            time
        )?;
    }
    let mut edges: Vec<(usize, usize, &str)> = g
        .edge_indices()
        .filter_map(|e| {
            g.edge_endpoints(e)
                .map(|(a, b)| (ids[a.index()], ids[b.index()], g[e].via.as_str()))
        })
        .collect();
    edges.sort_unstable();
    for (from, to, via) in edges {
        writeln!(out, "  n{from} -> n{to} [label=\"{via}\"];")?;
    }
    writeln!(out, "}}")
}

/// A name inside a quoted DOT string, shown as [`Term`] shows it, so that no control, bidi or
/// invisible character reaches the file or the drawing. The backslashes of `\x1b` and `\\` are
/// doubled: Graphviz reads `\n`, `\l`, `\N` and the like in a label as line breaks and names,
/// and drops the backslash of any other escape.
fn dot_escape(name: &str) -> String {
    let shown = Term(name).to_string();
    let mut out = String::with_capacity(shown.len() + 2);
    for c in shown.chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;
    use crate::graph::Via;
    use crate::graph::source::BuilderInfo;

    /// A text line pads the name by characters, as `{:width$}` does, so non-ASCII names line
    /// up; the evidence's source follows when there is one.
    #[test]
    fn text_lines_pad_names_as_format_does() {
        for (builder, from) in [
            ("b", Some("p-1")),
            ("é-ü", None),
            ("longer-than-the-width", Some("x")),
        ] {
            let entity = Entity::Builder(BuilderInfo {
                id: 1,
                name: builder.into(),
            });
            let name = format!("builder:{builder}");
            let from_node = from.map(|from| Node {
                entity: Entity::Builder(BuilderInfo {
                    id: 2,
                    name: from.into(),
                }),
                seed: None,
                label: None,
            });
            let entry = Tainted {
                entity: &entity,
                tainted_at: 1_500_000,
                via: Via::RanOn,
                from: from_node.as_ref(),
                at: 0,
                builder: None,
            };
            let width = 16;
            let mut line = Vec::new();
            text_line(&mut line, &entry, width, None);
            let tail = from.map_or_else(String::new, |from| format!(" from builder:{from}"));
            let expected = format!(
                "  {}  {name:width$}  ran-on{tail}\n",
                Rfc3339(entry.tainted_at)
            );
            assert_eq!(String::from_utf8(line).unwrap(), expected);
        }
    }

    /// Strings come out as `json::to_string` writes them, and decode to the value
    /// `serde_json` writes: every ASCII byte alone, in the middle of long and short strings
    /// (both sides of a block boundary), non-ASCII text, and C1, bidi and invisible
    /// characters, which are escaped.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        for b in 0u8..0x80 {
            let c = char::from(b);
            for at in 0..17 {
                cases.push(format!("{}{c}{}", "a".repeat(at), "b".repeat(23 - at)));
                cases.push(format!("{}{c}{}", "é".repeat(at / 2), "ÿ".repeat(9)));
            }
            cases.push(format!("{}{c}", "x".repeat(64)));
        }
        cases.extend(["", "héllo \u{2028} 🦀", "registry:5000/app@sha256:00ff"].map(str::to_owned));
        for c in [
            '\u{80}', '\u{9b}', '\u{9f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
        ] {
            cases.push(format!("{}{c}{}", "a".repeat(20), "é"));
        }
        cases.extend(["\u{200b}\u{200d}\u{feff}", "tag\u{e0041}"].map(str::to_owned));
        for case in cases {
            let mut ours = Vec::new();
            push_json_str(&mut ours, &case);
            let ours = String::from_utf8(ours).unwrap();
            assert_eq!(ours, json::to_string(&case).unwrap(), "{case:?}");
            assert!(!ours.chars().any(json::escapes), "{case:?}: {ours}");
            let decoded: String = serde_json::from_str(&ours).unwrap();
            let theirs: String =
                serde_json::from_str(&serde_json::to_string(&case).unwrap()).unwrap();
            assert_eq!(decoded, theirs, "{case:?}");
        }
        let mut ours = Vec::new();
        push_json_str(&mut ours, "a\u{9b}b\u{202e}c");
        assert_eq!(ours, b"\"a\\u009bb\\u202ec\"");
    }

    /// Items spread over several blocks, rendered on two threads, come out once each and in
    /// order, with their own positions.
    #[test]
    fn blocks_rendered_on_two_threads_are_written_in_order() {
        for len in [0, 1, BLOCK, BLOCK + 1, 3 * BLOCK + 5] {
            let items: Vec<usize> = (0..len).map(|i| i * 7).collect();
            let mut out = Vec::new();
            write_rendered(&mut out, &items, |buf, i, item| {
                assert_eq!(*item, i * 7);
                writeln!(buf, "{item}").unwrap();
            })
            .unwrap();
            let expected: String = items.iter().map(|i| format!("{i}\n")).collect();
            assert!(String::from_utf8(out).unwrap() == expected, "{len} items");
        }
    }

    /// An item line is the compact JSON object of its fields, in order, with `null` for a
    /// missing value.
    #[test]
    fn items_are_compact_objects() {
        let doc = ArtifactDoc {
            name: "reg.io/a\"b",
            backend: "registry",
            locator: "reg.io/a",
            digest: None,
            key: Some("k\n"),
            tags: &["t1".into(), "t\\2".into()],
            tainted_at: Rfc3339(1_500_000),
            via: ViaDoc {
                kind: "seed",
                from: None,
                at: Rfc3339(0),
            },
        };
        let render = |items: &[ArtifactDoc<'_>]| {
            let mut chunks = Vec::new();
            let last = items.len() - 1;
            let json = |buf: &mut Vec<u8>, i, item: &ArtifactDoc<'_>| {
                json_item_with(buf, i == last, |o| item.write(o));
            };
            render_items(items, json, |chunk| {
                chunks.push(chunk);
                Ok(())
            })
            .unwrap();
            chunks
        };
        let out = render(std::slice::from_ref(&doc)).concat();
        let expected = concat!(
            r#"    {"name":"reg.io/a\"b","backend":"registry","locator":"reg.io/a","digest":null,"#,
            r#""key":"k\n","tags":["t1","t\\2"],"tainted_at":"1970-01-01T00:00:01.500Z","#,
            r#""via":{"kind":"seed","from":null,"at":"1970-01-01T00:00:00Z"}}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // Across chunks, every item is whole and only the last one ends the array.
        let many: Vec<ArtifactDoc<'_>> = (0..2000)
            .map(|_| ArtifactDoc {
                via: ViaDoc { ..doc.via },
                ..doc
            })
            .collect();
        let chunks = render(&many);
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        let item = expected.trim_end();
        let mut whole = vec![format!("{item},\n"); many.len() - 1].concat();
        whole.push_str(expected);
        assert_eq!(String::from_utf8(chunks.concat()).unwrap(), whole);
    }
}
