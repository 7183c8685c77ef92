//! Showing URLs and HTTP headers without the credentials they may carry.
//!
//! Every URL or header that reaches a message, a log line or an error passes through
//! [`Redacted`]: user information in a URL, secret-looking query parameters and the value of
//! credential headers are replaced by `***`.

use std::fmt;

/// What stands in for a hidden value.
pub const MASK: &str = "***";

/// Query parameters whose values are credentials (compared without case).
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "client_secret",
    "code",
    "password",
    "refresh_token",
    "secret",
    "sig",
    "signature",
    "token",
    "x-amz-credential",
    "x-amz-security-token",
    "x-amz-signature",
    "x-goog-credential",
    "x-goog-signature",
];

/// Headers whose values are credentials (compared without case).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-registry-auth",
    "x-registry-config",
];

/// A URL or a header made safe to display.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(Shown<'a>);

#[derive(Clone, Copy)]
enum Shown<'a> {
    Url(&'a str),
    Header(&'a str, &'a str),
}

impl<'a> Redacted<'a> {
    /// A URL, shown without its user information or secret query values.
    pub fn url(url: &'a str) -> Self {
        Self(Shown::Url(url))
    }

    /// A header, shown as `Name: value` with the value of a credential header hidden (the
    /// scheme of an `Authorization` value stays, it helps diagnose the auth flow).
    pub fn header(name: &'a str, value: &'a str) -> Self {
        Self(Shown::Header(name, value))
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Shown::Url(url) => write_url(f, url),
            Shown::Header(name, value) => {
                write!(f, "{name}: ")?;
                if !SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    return f.write_str(value);
                }
                match value.split_once(' ') {
                    Some((scheme, _)) if name.to_ascii_lowercase().ends_with("authorization") => {
                        write!(f, "{scheme} {MASK}")
                    }
                    _ => f.write_str(MASK),
                }
            }
        }
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn write_url(f: &mut fmt::Formatter<'_>, url: &str) -> fmt::Result {
    // The authority ends at the first `/`, `?` or `#` after the scheme; user information is
    // everything before its last `@`.
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    f.write_str(scheme)?;
    match authority.rfind('@') {
        Some(at) => write!(f, "{MASK}@{}", &authority[at + 1..])?,
        None => f.write_str(authority)?,
    }
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let Some((path, query)) = before_fragment.split_once('?') else {
        return write!(f, "{before_fragment}{fragment}");
    };
    write!(f, "{path}?")?;
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            f.write_str("&")?;
        }
        match pair.split_once('=') {
            Some((key, _)) if SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(key)) => {
                write!(f, "{key}={MASK}")?;
            }
            _ => f.write_str(pair)?,
        }
    }
    f.write_str(fragment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> String {
        Redacted::url(u).to_string()
    }

    #[test]
    fn hides_user_information() {
        assert_eq!(
            url("https://user:pw@reg.example/v2/"),
            "https://***@reg.example/v2/"
        );
        assert_eq!(url("https://tok@reg.example"), "https://***@reg.example");
        assert_eq!(
            url("http://a:b@c@host:5000/x?y#z"),
            "http://***@host:5000/x?y#z"
        );
    }

    #[test]
    fn keeps_urls_without_secrets() {
        for plain in [
            "http://127.0.0.1:5000/v2/cache/manifests/sha256:ab",
            "https://auth.example/token?service=reg&scope=repository:a/b:pull,delete",
            "reg.example/path/with@sign",
            "",
        ] {
            assert_eq!(url(plain), plain);
        }
    }

    #[test]
    fn hides_secret_query_values() {
        assert_eq!(
            url("https://s3.example/blob?X-Amz-Signature=abc&part=1&token=t#frag"),
            "https://s3.example/blob?X-Amz-Signature=***&part=1&token=***#frag"
        );
    }

    #[test]
    fn hides_credential_headers() {
        let shown = |n, v| Redacted::header(n, v).to_string();
        assert_eq!(
            shown("Authorization", "Bearer eyJabc"),
            "Authorization: Bearer ***"
        );
        assert_eq!(
            shown("authorization", "Basic dXNlcjpwdw=="),
            "authorization: Basic ***"
        );
        assert_eq!(shown("Authorization", "opaque"), "Authorization: ***");
        assert_eq!(shown("Cookie", "a=b; c=d"), "Cookie: ***");
        assert_eq!(
            shown("WWW-Authenticate", "Bearer realm=\"https://auth\""),
            "WWW-Authenticate: Bearer realm=\"https://auth\""
        );
        assert_eq!(
            format!("{:?}", Redacted::header("Authorization", "Basic x")),
            "Authorization: Basic ***"
        );
    }
}
