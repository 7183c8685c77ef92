//! `--cache-from` / `--cache-to` values in every form buildx accepts.

use std::collections::BTreeMap;

use crate::model::{CacheSpec, ImageRef, ParseError};

/// Parses one cache flag value: a plain reference, or the CSV form `type=...,key=value`.
pub fn parse(value: &str, what: &str) -> Result<CacheSpec, ParseError> {
    let value = value.trim();
    if !value.contains('=') {
        ImageRef::parse(value, what)?;
        return Ok(CacheSpec::Registry {
            reference: value.to_owned(),
            mode: None,
        });
    }
    let mut fields = BTreeMap::new();
    for field in value.split(',') {
        let (key, val) = field.split_once('=').ok_or_else(|| {
            ParseError::new(what, value, format!("field `{field}` is not `key=value`"))
        })?;
        fields.insert(key.trim().to_ascii_lowercase(), val.trim().to_owned());
    }
    let get = |key: &str| fields.get(key).cloned();
    let require = |key: &str, kind: &str| {
        get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ParseError::new(what, value, format!("`type={kind}` needs `{key}=`")))
    };
    let kind = get("type").unwrap_or_else(|| "registry".to_owned());
    Ok(match kind.as_str() {
        "registry" => {
            let reference = require("ref", "registry")?;
            ImageRef::parse(&reference, what)?;
            CacheSpec::Registry {
                reference,
                mode: get("mode"),
            }
        }
        "inline" => CacheSpec::Inline,
        "gha" => CacheSpec::Gha {
            scope: get("scope").unwrap_or_else(|| "buildkit".to_owned()),
        },
        "local" => CacheSpec::Local {
            path: get("src")
                .or_else(|| get("dest"))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ParseError::new(what, value, "`type=local` needs `src=` or `dest=`")
                })?,
        },
        "s3" => {
            let bucket = require("bucket", "s3")?;
            let prefix = get("prefix").unwrap_or_default();
            let name = get("name").unwrap_or_else(|| "buildkit".to_owned());
            let region = get("region").map(|r| format!(" ({r})")).unwrap_or_default();
            CacheSpec::S3 {
                key: format!("s3://{bucket}/{prefix}{name}{region}"),
            }
        }
        "azblob" => CacheSpec::Azblob {
            key: azblob_key(|attr| fields.get(attr).map(String::as_str)),
        },
        other => {
            return Err(ParseError::new(
                what,
                value,
                format!(
                    "unknown cache type `{other}` (expected registry, inline, gha, local, s3 or azblob)"
                ),
            ));
        }
    })
}

/// The key of an azblob cache: the URL of its manifest blob,
/// `<account_url>/<container>/<prefix>/<manifests_prefix>/<name>`, from the attributes BuildKit
/// reads (`cache/remotecache/azblob/utils.go`): container `buildkit-cache`, manifests prefix
/// `manifests` and name `buildkit` by default, the blob path joined and cleaned as Go's
/// `filepath.Join` does. Several names (`a;b`) are kept as written. Without `account_url` the
/// builder's environment names the account, and the key starts at `/<container>`. (The
/// builder's `BUILDKIT_AZURE_STORAGE_*` variables can change the defaults; they are not seen
/// here.)
pub fn azblob_key<'a>(attr: impl Fn(&str) -> Option<&'a str>) -> String {
    let account = attr("account_url")
        .unwrap_or_default()
        .trim_end_matches('/');
    let container = attr("container").unwrap_or("buildkit-cache");
    let parts = [
        attr("prefix").unwrap_or_default(),
        attr("manifests_prefix").unwrap_or("manifests"),
        attr("name").filter(|n| !n.is_empty()).unwrap_or("buildkit"),
    ];
    let joined: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    let path = crate::model::clean_path(&joined.join("/"));
    let path = path.trim_start_matches('/');
    format!("{account}/{container}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_csv_registry_forms() {
        assert_eq!(
            parse("reg.io/app:cache", "--cache-from").unwrap(),
            CacheSpec::Registry {
                reference: "reg.io/app:cache".into(),
                mode: None
            }
        );
        assert_eq!(
            parse("type=registry,ref=reg.io/app:cache,mode=max", "--cache-to").unwrap(),
            CacheSpec::Registry {
                reference: "reg.io/app:cache".into(),
                mode: Some("max".into())
            }
        );
    }

    #[test]
    fn other_backends_keep_their_scope_or_key() {
        assert_eq!(
            parse("type=inline", "--cache-to").unwrap(),
            CacheSpec::Inline
        );
        assert_eq!(
            parse("type=gha,scope=web-main", "--cache-to").unwrap(),
            CacheSpec::Gha {
                scope: "web-main".into()
            }
        );
        assert_eq!(
            parse("type=local,src=/tmp/c", "--cache-from").unwrap(),
            CacheSpec::Local {
                path: "/tmp/c".into()
            }
        );
        assert_eq!(
            parse("type=s3,region=eu-west-1,bucket=b,name=web", "--cache-to").unwrap(),
            CacheSpec::S3 {
                key: "s3://b/web (eu-west-1)".into()
            }
        );
    }

    #[test]
    fn errors_name_the_flag_and_value() {
        let err = parse("type=nope,ref=x", "--cache-to").unwrap_err();
        assert_eq!(err.what, "--cache-to");
        assert!(parse("type=registry", "--cache-to").is_err());
        assert!(parse("type=local", "--cache-to").is_err());
        assert!(parse("Bad Ref", "--cache-from").is_err());
    }
}
