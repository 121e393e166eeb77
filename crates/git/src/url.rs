//! Repository URLs without their secrets.
//!
//! A URL may carry credentials in three places: userinfo
//! (`https://user:token@host/repo`, or a token alone as the user name,
//! `https://TOKEN@host/repo`, as GitHub users write it), the query
//! (`?access_token=...`), or an scp-like address with a password
//! (`user:pass@host:org/repo`). Userinfo is split off before the URL
//! reaches libgit2 and used as basic auth; only the redacted form is ever
//! shown in a log line, a status field, an event or an error message.

/// A URL split into what libgit2 is given and the credentials it carried.
#[derive(Clone, PartialEq, Eq)]
pub struct SplitUrl {
    /// The URL without userinfo (its query kept: it may authenticate).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for SplitUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitUrl")
            .field("url", &redact(&self.url))
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

const REDACTED: &str = "<redacted>";

/// Splits the userinfo off a `scheme://user:pass@host/...` URL. An ssh
/// address keeps a user without a password (`git@host:org/repo`,
/// `ssh://git@host/repo`): that user is not a secret, and the server needs
/// it. An scp-like address with a password loses the password.
pub fn split(url: &str) -> SplitUrl {
    let Some((scheme, rest)) = url.split_once("://") else {
        return split_scp(url);
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

/// `user[:pass]@host:path`, git's scp-like ssh syntax.
fn split_scp(url: &str) -> SplitUrl {
    let plain = SplitUrl {
        url: url.to_owned(),
        username: None,
        password: None,
    };
    let Some((userinfo, host_path)) = url.split_once('@') else {
        return plain;
    };
    if userinfo.contains('/') || !host_path.contains(':') {
        return plain;
    }
    match userinfo.split_once(':') {
        Some((user, pass)) => SplitUrl {
            url: format!("{user}@{host_path}"),
            username: Some(user.to_owned()),
            password: Some(pass.to_owned()),
        },
        None => plain,
    }
}

/// Query parameters that carry credentials (GitLab's `private_token`,
/// OAuth's `access_token`, signed URLs' `sig`, ...): by name, loosely.
fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "key",
        "sig",
        "auth",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// The URL as it may be shown: no userinfo (but an ssh user), and the
/// values of credential-like query parameters replaced by `<redacted>`.
pub fn redact(url: &str) -> String {
    let s = split(url).url;
    let (base, fragment) = match s.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (s.as_str(), None),
    };
    let Some((head, query)) = base.split_once('?') else {
        return s;
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}={REDACTED}"),
            _ => p.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Removes every occurrence of the given secrets, and the credentials of
/// any URL in the text, from a message that came back from libgit2 or a
/// server.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, REDACTED);
    }
    let mut cleaned = String::with_capacity(out.len());
    for (i, word) in out.split(' ').enumerate() {
        if i > 0 {
            cleaned.push(' ');
        }
        let trimmed = word.trim_matches(|c: char| "'\"()<>,;".contains(c));
        let looks_like_url =
            trimmed.contains("://") || (trimmed.contains('@') && trimmed.contains(':'));
        if looks_like_url {
            let shown = redact(trimmed);
            if shown != trimmed {
                cleaned.push_str(&word.replace(trimmed, &shown));
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
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
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

/// Which repository URLs a GitRepo may name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `file://` URLs and local paths (for `flotilla dev` and tests; off
    /// in `flotilla controller` unless asked for). Never inside
    /// `forbidden_dir`.
    pub allow_file: bool,
    /// The mirrors' own directory: never readable as a repository, since
    /// another tenant's mirror lives there.
    pub forbidden_dir: Option<std::path::PathBuf>,
}

/// Checks a repository URL where it enters: a known remote scheme (https,
/// http, ssh, git, or an scp-like `user@host:path`), or a local one only
/// when allowed; nothing that could be read as an option or hide a
/// control character. The message shows the URL redacted.
pub fn check_repo_url(url: &str, policy: &UrlPolicy) -> Result<(), String> {
    let shown = redact(url);
    if url.is_empty() {
        return Err("spec.repo is empty".into());
    }
    if url.len() > 4096 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{shown:?} is not a URL (too long, or it has spaces or control characters)"
        ));
    }
    if url.starts_with('-') {
        return Err(format!("{shown:?} is not a URL"));
    }
    let local_path = match url.split_once("://") {
        Some(("https" | "http" | "ssh" | "git", rest)) if !rest.is_empty() => return Ok(()),
        Some(("file", path)) => Some(path.to_owned()),
        Some((scheme, _)) => {
            return Err(format!(
                "{shown:?}: the {scheme}:// scheme is not supported (use https, http, ssh or git)"
            ));
        }
        None if url.starts_with('/') || url.starts_with('.') => Some(url.to_owned()),
        None if split_scp(url).url.contains('@') || looks_like_scp(url) => return Ok(()),
        None => {
            return Err(format!(
                "{shown:?} is not a repository URL (https://, ssh://, git:// or user@host:path)"
            ));
        }
    };
    let path = local_path.unwrap_or_default();
    if !policy.allow_file {
        return Err(format!(
            "{shown:?}: local repositories (file:// and paths) are disabled; the controller enables them with --allow-file-repos"
        ));
    }
    // As libgit2 will read it: percent-decoded, and absolute (a relative
    // path would be the controller's working directory).
    let path = match path.strip_prefix("localhost/") {
        Some(rest) => format!("/{rest}"),
        None => path,
    };
    let decoded = percent_decode(&path);
    if !decoded.starts_with('/') {
        return Err(format!(
            "{shown:?}: a local repository must be an absolute path (file:///path)"
        ));
    }
    if let Some(dir) = &policy.forbidden_dir {
        let target = resolve_path(std::path::Path::new(&decoded));
        let mirrors = resolve_path(dir);
        if target.starts_with(&mirrors) {
            return Err(format!(
                "{shown:?} points into the controller's git mirrors, which are not repositories a GitRepo may read"
            ));
        }
    }
    Ok(())
}

/// `host:path` with something before the colon that is a host.
fn looks_like_scp(url: &str) -> bool {
    match url.split_once(':') {
        Some((host, path)) => {
            !host.is_empty()
                && !path.is_empty()
                && !host.contains('/')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._@".contains(c))
        }
        None => false,
    }
}

/// A path as the filesystem will resolve it: the longest existing
/// ancestor with its symlinks resolved, then the rest, with `..` and `.`
/// folded (a `..` beyond the root stays at the root).
fn resolve_path(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::{Component, PathBuf};
    let mut existing = PathBuf::new();
    let mut rest: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        if rest.is_empty() {
            let next = existing.join(c);
            if next.exists() {
                existing = std::fs::canonicalize(&next).unwrap_or(next);
                continue;
            }
        }
        rest.push(c);
    }
    let mut out = existing;
    for c in rest {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The key of a repository's shared mirror: its URL without userinfo
/// (trailing `/` or `.git` ignored), and a digest of everything that
/// decides what may be read through it: the credentials actually used
/// (a Secret's contents, or the URL's userinfo) and the TLS trust. Two
/// GitRepos share a mirror only when they would be allowed to read the
/// same thing.
pub fn mirror_key(url: &str, credentials_digest: &str) -> String {
    let url = split(url).url;
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{url}\n{credentials_digest}"));
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        let rows: [(&str, &str, Option<&str>, Option<&str>); 9] = [
            ("https://host/org/repo", "https://host/org/repo", None, None),
            (
                "https://bob:s3cr%40t@host:8443/org/repo.git",
                "https://host:8443/org/repo.git",
                Some("bob"),
                Some("s3cr@t"),
            ),
            (
                "https://ghp_token123@host/repo",
                "https://host/repo",
                Some("ghp_token123"),
                None,
            ),
            (
                "ssh://git@host/org/repo",
                "ssh://git@host/org/repo",
                Some("git"),
                None,
            ),
            ("git@host:org/repo", "git@host:org/repo", None, None),
            (
                "deploy:hunter2@host:org/repo",
                "deploy@host:org/repo",
                Some("deploy"),
                Some("hunter2"),
            ),
            ("file:///tmp/repo", "file:///tmp/repo", None, None),
            (
                "http://u:p@127.0.0.1:9/r?x=@y",
                "http://127.0.0.1:9/r?x=@y",
                Some("u"),
                Some("p"),
            ),
            (
                "https://host/r?access_token=abc",
                "https://host/r?access_token=abc",
                None,
                None,
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
    fn every_credential_form_is_redacted() {
        let rows = [
            ("https://bob:hunter2@host/r", "https://host/r"),
            (
                "https://ghp_abc123@github.com/o/r",
                "https://github.com/o/r",
            ),
            (
                "https://host/r?access_token=abc123&ref=main",
                "https://host/r?access_token=<redacted>&ref=main",
            ),
            (
                "https://host/r.git?private_token=zzz#frag",
                "https://host/r.git?private_token=<redacted>#frag",
            ),
            ("deploy:hunter2@host:org/repo", "deploy@host:org/repo"),
            ("git@host:org/repo", "git@host:org/repo"),
            ("ssh://git@host/org/repo", "ssh://git@host/org/repo"),
            ("ssh://git:pw@host/org/repo", "ssh://host/org/repo"),
        ];
        for (input, want) in rows {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let s = format!("{:?}", split("https://bob:hunter2@host/r?token=t0k3n"));
        assert!(
            !s.contains("hunter2") && !s.contains("bob") && !s.contains("t0k3n"),
            "{s}"
        );
    }

    #[test]
    fn scrub_removes_secrets_and_credentials_of_urls() {
        let msg = "failed to fetch 'https://bob:hunter2@host/r': token abcdef rejected; also https://host/x?access_token=qq1 and deploy:pw9@host:org/r";
        let out = scrub(msg, &["abcdef"]);
        assert_eq!(
            out,
            "failed to fetch 'https://host/r': token <redacted> rejected; also https://host/x?access_token=<redacted> and deploy@host:org/r"
        );
    }

    #[test]
    fn mirror_keys_differ_by_credentials_actually_used() {
        let a = mirror_key("https://host/org/repo", "");
        assert_eq!(a, mirror_key("https://host/org/repo.git", ""));
        assert_eq!(a, mirror_key("https://host/org/repo/", ""));
        assert_ne!(a, mirror_key("https://host/org/repo", "digest-of-a-secret"));
        assert_ne!(a, mirror_key("https://host/org/other", ""));
        // A query token is part of the URL libgit2 uses, so of the key.
        assert_ne!(a, mirror_key("https://host/org/repo?access_token=x", ""));
    }

    #[test]
    fn repository_urls_are_checked_where_they_enter() {
        let remote = UrlPolicy::default();
        for ok in [
            "https://github.com/o/r",
            "http://127.0.0.1:8080/r.git",
            "ssh://git@host/o/r",
            "git://host/o/r",
            "git@github.com:o/r.git",
            "host.example.com:o/r",
        ] {
            check_repo_url(ok, &remote).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("file:///srv/git/r", "disabled"),
            ("/srv/git/r", "disabled"),
            ("./r", "disabled"),
            ("ext::sh -c evil", "spaces"),
            ("--upload-pack=evil", "not a URL"),
            ("ftp://host/r", "not supported"),
            ("https://host/r\nx", "control"),
            ("", "empty"),
        ] {
            let err = check_repo_url(bad, &remote).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let dir = std::env::temp_dir().join("flotilla-url-test-mirrors");
        let local = UrlPolicy {
            allow_file: true,
            forbidden_dir: Some(dir.clone()),
        };
        check_repo_url("file:///srv/git/r", &local).unwrap();
        let inside = format!("file://{}/abc.git", dir.display());
        let err = check_repo_url(&inside, &local).unwrap_err();
        assert!(err.contains("mirrors"), "{err}");
        let sneaky = format!(
            "file://{}/../{}/abc.git",
            dir.display(),
            dir.file_name().unwrap().to_string_lossy()
        );
        assert!(check_repo_url(&sneaky, &local).is_err(), "{sneaky}");
        // Found in review: percent-encoding, relative paths and symlinks.
        std::fs::create_dir_all(&dir).unwrap();
        let s = dir.to_string_lossy().into_owned();
        let last = s.rfind('/').unwrap();
        let encoded = format!(
            "file://{}%{:02x}{}/abc.git",
            &s[..last + 1],
            s.as_bytes()[last + 1],
            &s[last + 2..]
        );
        assert!(check_repo_url(&encoded, &local).is_err(), "{encoded}");
        assert!(
            check_repo_url("../../tmp/x.git", &local)
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            check_repo_url("file://relative/x.git", &local)
                .unwrap_err()
                .contains("absolute")
        );
        let link = std::env::temp_dir().join(format!("flotilla-url-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let via = format!("file://{}/abc.git", link.display());
        assert!(check_repo_url(&via, &local).is_err(), "{via}");
        let via_dotdot = format!("file://{}/x/../abc.git", link.display());
        assert!(check_repo_url(&via_dotdot, &local).is_err(), "{via_dotdot}");
        std::fs::remove_file(&link).unwrap();
    }
}
