//! Property-based fuzzing of the Dockerfile reader: whatever a Dockerfile holds, reading it
//! never panics, and a refusal is one line naming the file. Cases are bounded (proptest's
//! default of 256, or `PROPTEST_CASES`) so CI stays fast.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::dockerfile::parse;

/// Pieces Dockerfiles are made of, the awkward ones included: directives, continuations,
/// heredocs, exec form, variables, mount flags and stage references.
fn arb_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM".to_owned()),
        Just("FROM base:1 AS build".to_owned()),
        Just("FROM build".to_owned()),
        Just("FROM ${BASE:-alpine}".to_owned()),
        Just("FROM --platform=$BUILDPLATFORM $IMG".to_owned()),
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

fn check(
    text: &str,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<(), TestCaseError> {
    if let Err(err) = parse(text, "fuzz/Dockerfile", args, target) {
        let shown = err.to_string();
        prop_assert!(
            shown.starts_with("`fuzz/Dockerfile`"),
            "does not name the input: {shown}"
        );
        prop_assert!(
            !shown.chars().any(char::is_control),
            "not one line: {shown:?}"
        );
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

    /// Any text at all: no panic; a refusal is one line naming the file.
    #[test]
    fn any_text_is_read_or_refused_in_one_line(text in "\\PC{0,300}|(.|\n){0,120}") {
        check(&text, &BTreeMap::new(), None)?;
    }
}
