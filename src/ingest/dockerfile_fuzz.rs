//! Property-based fuzzing of the Dockerfile reader: whatever a Dockerfile holds, reading it
//! never panics, and a refusal or a warning is one line naming the file; and when the platform
//! is not known, the mounts counted include those of every platform it could be. Cases are
//! bounded (proptest's default of 256, or `PROPTEST_CASES`) so CI stays fast.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::dockerfile::{BuildOptions, Platform, parse, parse_build};

/// Pieces Dockerfiles are made of, the awkward ones included: directives, continuations,
/// heredocs, exec form, variables, mount flags and stage references.
fn arb_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM".to_owned()),
        Just("FROM base:1 AS build".to_owned()),
        Just("FROM build".to_owned()),
        Just("FROM ${BASE:-alpine}".to_owned()),
        Just("FROM --platform=$BUILDPLATFORM $IMG".to_owned()),
        Just("FROM alpine AS base-amd64".to_owned()),
        Just("FROM base-arm64 AS base-arm64-debug".to_owned()),
        Just("FROM scratch AS BASE-ARM64".to_owned()),
        Just("FROM base-$TARGETARCH${DEBUG:+-debug} AS app".to_owned()),
        Just("FROM base-${TARGETARCH:-arm64}".to_owned()),
        Just("FROM ${TARGETOS}-${BUILDARCH}${TARGETVARIANT:+-$TARGETVARIANT}".to_owned()),
        Just("FROM ${BASE:+base}-${TARGETARCH#a}".to_owned()),
        Just("FROM ${BASE/busy/$TARGETARCH}".to_owned()),
        Just("FROM ${BASE:-$BUILDPLATFORM}".to_owned()),
        Just("FROM ${TARGETPLATFORM:?no platform}".to_owned()),
        Just("ARG DEBUG".to_owned()),
        Just("ARG DEBUG=1".to_owned()),
        Just("FROM scratch".to_owned()),
        Just("ARG BASE=busybox".to_owned()),
        Just("ARG".to_owned()),
        Just("ENV A=1 B=\"2 3\"".to_owned()),
        Just("RUN --mount=type=cache,target=/root/.cache/pip pip install .".to_owned()),
        Just("RUN --mount=type=cache,id=${ID},target=/c,sharing=locked,readonly true".to_owned()),
        Just(
            "RUN --mount=type=cache,from=build,source=/x,target=/y,uid=1,gid=2,mode=0755 x"
                .to_owned()
        ),
        Just("RUN --mount=type=cache".to_owned()),
        Just("RUN --mount=type=cache,target=".to_owned()),
        Just("RUN --mount=".to_owned()),
        Just("RUN [\"sh\", \"-c\", \"true\"]".to_owned()),
        Just("RUN [\"unterminated".to_owned()),
        Just("RUN <<EOF".to_owned()),
        Just("RUN <<-\"END\" cat".to_owned()),
        Just("EOF".to_owned()),
        Just("\tEND".to_owned()),
        Just("COPY --from=build /a /b".to_owned()),
        Just("COPY --from=0 /a /b".to_owned()),
        Just("# escape=`".to_owned()),
        Just("# syntax=docker/dockerfile:1".to_owned()),
        Just("# a comment".to_owned()),
        Just("\\".to_owned()),
        Just("`".to_owned()),
        Just("ONBUILD RUN x".to_owned()),
        Just("UNKNOWN instruction".to_owned()),
        Just(String::new()),
        Just(format!(
            "RUN --mount=type=cache,id={},target=/l x",
            "i".repeat(1100)
        )),
        "\\PC{0,24}",
        "[ -~]{0,24}",
        "[\\x00-\\x1f\\x7f\\u{9b}\\u{202e} a-z=,/$`\\\\-]{0,24}",
    ]
}

/// A Dockerfile: pieces on lines, some ending in a continuation.
fn arb_dockerfile() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            arb_piece(),
            prop_oneof![Just("\n"), Just(" \\\n"), Just(" `\n"), Just("\r\n")],
        ),
        0..14,
    )
    .prop_map(|lines| lines.into_iter().map(|(l, end)| l + end).collect())
}

fn arb_args() -> impl Strategy<Value = (BTreeMap<String, String>, Option<String>)> {
    (
        prop::collection::btree_map(
            prop_oneof![
                Just("BASE".to_owned()),
                Just("ID".to_owned()),
                Just("IMG".to_owned()),
                Just("BUILDKIT_CACHE_MOUNT_NS".to_owned()),
                Just("TARGETARCH".to_owned()),
                Just("DEBUG".to_owned()),
            ],
            "[ -~]{0,12}",
            0..4,
        ),
        prop_oneof![
            Just(None),
            Just(Some("build".to_owned())),
            Just(Some("0".to_owned())),
            "[ -~]{0,8}".prop_map(Some),
        ],
    )
}

/// A multi-stage Dockerfile whose `FROM`s pick stages by platform arguments, with cache
/// mounts, `ENV`, `ARG` and `ONBUILD` in between: where the platform decides what is built.
fn arb_staged() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("alpine"),
        Just("scratch"),
        Just("base-amd64"),
        Just("base-$TARGETARCH"),
        Just("base-${TARGETARCH}${DEBUG:+-debug}"),
        Just("base-${BUILDARCH:-amd64}"),
        Just("${TARGETOS}-${TARGETARCH}"),
        Just("$TARGETOS-$TARGETARCH$TARGETVARIANT"),
        Just("app-$TARGETOS"),
        Just("${TARGETPLATFORM/\\//-}"),
        Just("${IMG:-base}-${TARGETARCH%64}"),
        Just("$IMG"),
        Just("${IMG}-amd64"),
        Just("base-arm${IMG:+-$IMG}"),
        Just("linux-arm${IMG%%7}"),
    ];
    let name = prop_oneof![
        Just(""),
        Just(" AS base-amd64"),
        Just(" AS base-arm64"),
        Just(" AS base-arm64-debug"),
        Just(" AS base-amd64-debug"),
        Just(" AS linux-arm64"),
        Just(" AS linux-armv7"),
        Just(" AS linux-arm"),
        Just(" AS app-linux"),
        Just(" AS app-windows"),
        Just(" AS base-arm"),
        Just(" AS base-arm-v7"),
        Just(" AS linux-amd64"),
    ];
    let body = prop_oneof![
        Just("RUN --mount=type=cache,target=/a true"),
        Just("RUN --mount=type=cache,target=/b,sharing=locked true"),
        Just("RUN --mount=type=cache,id=$C,target=/c true"),
        Just("RUN --mount=type=cache,id=${ID}x,target=/d true"),
        Just("ENV C=/from-env"),
        Just("ARG C=/from-arg"),
        Just("ARG DEBUG"),
        Just("ONBUILD RUN --mount=type=cache,target=/onbuild true"),
        Just("COPY --from=base-arm64 / /"),
        Just("RUN --mount=type=cache,target=/e,from=linux-arm true"),
        Just("RUN --mount=type=cache,target=/f,sharing=bogus true"),
    ];
    let stage = (base, name, prop::collection::vec(body, 0..3))
        .prop_map(|(base, name, body)| format!("FROM {base}{name}\n{}", body.join("\n")));
    (
        prop_oneof![
            Just(""),
            Just("ARG DEBUG\nARG IMG\n"),
            Just("ARG IMG=base-$TARGETARCH\n"),
            Just("ARG IMG=${TARGETOS:+base}\n"),
            Just("ARG IMG=$TARGETVARIANT\n"),
        ],
        prop::collection::vec(stage, 1..7),
    )
        .prop_map(|(globals, stages)| format!("{globals}{}\n", stages.join("\n")))
}

/// `--platform` values, real and not.
fn arb_platform() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("linux/amd64".to_owned()),
        Just("linux/arm64".to_owned()),
        Just("linux/arm/v7".to_owned()),
        Just("windows".to_owned()),
        Just("arm64".to_owned()),
        Just("local".to_owned()),
        "[a-zA-Z0-9_/$-]{0,20}",
        "\\PC{0,12}",
    ]
}

/// An error or a warning shown is one line naming the file.
fn one_line(shown: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        shown.starts_with("`fuzz/Dockerfile`"),
        "does not name the input: {shown}"
    );
    prop_assert!(
        !shown.chars().any(char::is_control),
        "not one line: {shown:?}"
    );
    Ok(())
}

fn check(
    text: &str,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<(), TestCaseError> {
    match parse(text, "fuzz/Dockerfile", args, target) {
        Err(err) => one_line(&err.to_string())?,
        Ok(info) => {
            for warning in &info.warnings {
                one_line(&warning.to_string())?;
            }
        }
    }
    Ok(())
}

/// Read with the platform not known, a file counts every mount it counts for a known
/// platform (taint is over-approximated, never lost), and warns rather than fails.
fn check_unknown_platform(
    text: &str,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
    platforms: &[String],
) -> Result<(), TestCaseError> {
    let amd = Platform::linux_amd64();
    let platforms: Vec<Platform> = platforms
        .iter()
        .filter_map(|p| Platform::parse(p, &amd).ok())
        .collect();
    let options = |build_platform: Option<Platform>| BuildOptions {
        build_args: args.clone(),
        target: target.map(str::to_owned),
        platforms: Vec::new(),
        build_platform,
    };
    let unknown = parse_build(text, "fuzz/Dockerfile", &options(None));
    for platform in platforms {
        let Ok(known) = parse_build(text, "fuzz/Dockerfile", &options(Some(platform.clone())))
        else {
            continue;
        };
        let unknown = match &unknown {
            Ok(unknown) => unknown,
            Err(err) => {
                return Err(TestCaseError::fail(format!(
                    "refused with the platform not known but read for {platform}: {err}"
                )));
            }
        };
        for mount in &known.mounts {
            prop_assert!(
                unknown.mounts.contains(mount),
                "{platform}: {mount:?} not among {:?}",
                unknown.mounts
            );
        }
    }
    Ok(())
}

proptest! {
    /// Dockerfiles made of real and broken pieces: no panic; a refusal is one line naming the
    /// file.
    #[test]
    fn dockerfiles_are_read_or_refused_in_one_line(
        text in arb_dockerfile(),
        (args, target) in arb_args()
    ) {
        check(&text, &args, target.as_deref())?;
    }

    /// With the platform not known, a file's mounts include those of every platform, and
    /// reading it never fails where a known platform reads it.
    #[test]
    fn unknown_platforms_over_approximate(
        text in prop_oneof![arb_dockerfile(), arb_staged()],
        (args, target) in arb_args(),
        platforms in prop::collection::vec(arb_platform(), 1..4)
    ) {
        check_unknown_platform(&text, &args, target.as_deref(), &platforms)?;
    }

    /// Any text at all: no panic; a refusal is one line naming the file.
    #[test]
    fn any_text_is_read_or_refused_in_one_line(text in "\\PC{0,300}|(.|\n){0,120}") {
        check(&text, &BTreeMap::new(), None)?;
    }
}
