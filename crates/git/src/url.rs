//! Repository URLs without their secrets.
//!
//! A URL may carry credentials (`https://user:token@host/repo`). They are
//! split off before the URL reaches libgit2, a log line, a status field or
//! an error message; only the redacted form is ever shown.

/// A URL split into what may be shown and the credentials it carried.
#[derive(Clone, PartialEq, Eq)]
pub struct SplitUrl {
    /// The URL without userinfo.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for SplitUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitUrl")
            .field("url", &self.url)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Splits the userinfo off a `scheme://user:pass@host/...` URL. An scp-like
/// ssh address (`git@host:org/repo`) keeps its user, which is not a secret
/// and which the server needs.
pub fn split(url: &str) -> SplitUrl {
    let Some((scheme, rest)) = url.split_once("://") else {
        return SplitUrl {
            url: url.to_owned(),
            username: None,
            password: None,
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return SplitUrl {
            url: url.to_owned(),
            username: None,
            password: None,
        };
    };
    let (user, pass) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    if scheme == "ssh" && pass.is_none() {
        // ssh://git@host/repo: the user name is part of the address.
        return SplitUrl {
            url: url.to_owned(),
            username: Some(percent_decode(user)),
            password: None,
        };
    }
    SplitUrl {
        url: format!("{scheme}://{host}{path}"),
        username: (!user.is_empty()).then(|| percent_decode(user)),
        password: pass.map(percent_decode),
    }
}

/// The URL as it may be shown.
pub fn redact(url: &str) -> String {
    split(url).url
}

/// Removes every occurrence of the given secrets (and any userinfo-bearing
/// form of `url`) from a message that came back from libgit2 or a server.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, "<redacted>");
    }
    // A URL with a password anywhere in the text.
    let mut cleaned = String::with_capacity(out.len());
    for (i, word) in out.split(' ').enumerate() {
        if i > 0 {
            cleaned.push(' ');
        }
        if word.contains("://") && word.contains('@') {
            let trimmed = word.trim_matches(|c: char| "'\"()<>,;".contains(c));
            let split = split(trimmed);
            if split.password.is_some() {
                cleaned.push_str(&word.replace(trimmed, &split.url));
                continue;
            }
        }
        cleaned.push_str(word);
    }
    cleaned
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The key of a repository's shared mirror: its redacted URL (with a
/// trailing `/` or `.git` ignored) and the identity of the credentials used
/// to read it. Two GitRepos share a mirror only when they would be allowed
/// to read the same thing.
pub fn mirror_key(url: &str, credentials_id: &str) -> String {
    let url = redact(url);
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{url}\n{credentials_id}"));
    hex::encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        let rows: [(&str, &str, Option<&str>, Option<&str>); 7] = [
            ("https://host/org/repo", "https://host/org/repo", None, None),
            (
                "https://bob:s3cr%40t@host:8443/org/repo.git",
                "https://host:8443/org/repo.git",
                Some("bob"),
                Some("s3cr@t"),
            ),
            (
                "https://x-access-token@host/repo",
                "https://host/repo",
                Some("x-access-token"),
                None,
            ),
            (
                "ssh://git@host/org/repo",
                "ssh://git@host/org/repo",
                Some("git"),
                None,
            ),
            ("git@host:org/repo", "git@host:org/repo", None, None),
            ("file:///tmp/repo", "file:///tmp/repo", None, None),
            (
                "http://u:p@127.0.0.1:9/r?x=@y",
                "http://127.0.0.1:9/r?x=@y",
                Some("u"),
                Some("p"),
            ),
        ];
        for (input, url, user, pass) in rows {
            let s = split(input);
            assert_eq!(s.url, url, "{input}");
            assert_eq!(s.username.as_deref(), user, "{input}");
            assert_eq!(s.password.as_deref(), pass, "{input}");
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let s = format!("{:?}", split("https://bob:hunter2@host/r"));
        assert!(!s.contains("hunter2") && !s.contains("bob"), "{s}");
    }

    #[test]
    fn scrub_removes_secrets_and_userinfo() {
        let msg = "failed to fetch 'https://bob:hunter2@host/r': token abcdef rejected";
        let out = scrub(msg, &["abcdef"]);
        assert_eq!(
            out,
            "failed to fetch 'https://host/r': token <redacted> rejected"
        );
    }

    #[test]
    fn mirror_keys_share_by_url_and_credentials() {
        let a = mirror_key("https://host/org/repo", "");
        assert_eq!(a, mirror_key("https://host/org/repo.git", ""));
        assert_eq!(a, mirror_key("https://u:p@host/org/repo/", ""));
        assert_ne!(a, mirror_key("https://host/org/repo", "ns/secret"));
        assert_ne!(a, mirror_key("https://host/org/other", ""));
    }
}
