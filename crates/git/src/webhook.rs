//! Push webhooks from GitHub, GitLab, Gitea and Gogs: authenticate the
//! request, then say which repository and ref were pushed.
//!
//! | provider | event header | proof |
//! |---|---|---|
//! | GitHub | `X-GitHub-Event` | `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` |
//! | GitLab | `X-Gitlab-Event` | `X-Gitlab-Token: <the secret>` |
//! | Gitea | `X-Gitea-Event` | `X-Gitea-Signature: <hex HMAC-SHA256>` |
//! | Gogs | `X-Gogs-Event` | `X-Gogs-Signature: <hex HMAC-SHA256>` |
//!
//! Comparisons take the same time whatever the input, and nothing about
//! the secret or the expected signature reaches an error message.

use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Gogs,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("not a GitHub, GitLab, Gitea or Gogs webhook (no event header)")]
    UnknownProvider,
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("the signature does not match")]
    BadSignature,
    #[error("unreadable payload: {0}")]
    BadPayload(String),
}

/// A verified push.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Push {
    /// Every URL the payload gives for the repository (https, ssh, web).
    pub urls: Vec<String>,
    /// `refs/heads/main` or `refs/tags/v1`, when the payload says.
    pub git_ref: Option<String>,
    pub commit: Option<String>,
}

/// What a verified request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Push(Push),
    /// A ping or any other event: accepted, nothing to do.
    Ignored(String),
}

/// Authenticates a request. `header` looks a header up by its
/// case-insensitive name.
pub fn verify<'h>(
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    secret: &[u8],
) -> Result<Provider, WebhookError> {
    let (provider, sig_header) = if header("x-github-event").is_some() {
        (Provider::GitHub, "X-Hub-Signature-256")
    } else if header("x-gitlab-event").is_some() {
        (Provider::GitLab, "X-Gitlab-Token")
    } else if header("x-gitea-event").is_some() {
        (Provider::Gitea, "X-Gitea-Signature")
    } else if header("x-gogs-event").is_some() {
        (Provider::Gogs, "X-Gogs-Signature")
    } else {
        return Err(WebhookError::UnknownProvider);
    };
    let given = header(&sig_header.to_ascii_lowercase())
        .map(str::trim)
        .ok_or(WebhookError::MissingSignature(sig_header))?;
    let ok = match provider {
        Provider::GitLab => constant_time_eq(given.as_bytes(), secret),
        Provider::GitHub => given
            .strip_prefix("sha256=")
            .is_some_and(|hex_sig| signature_matches(hex_sig, body, secret)),
        Provider::Gitea | Provider::Gogs => signature_matches(given, body, secret),
    };
    if ok && !secret.is_empty() {
        Ok(provider)
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// Reads the event a verified request carries.
pub fn parse<'h>(
    provider: Provider,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<Event, WebhookError> {
    let event = match provider {
        Provider::GitHub => header("x-github-event"),
        Provider::GitLab => header("x-gitlab-event"),
        Provider::Gitea => header("x-gitea-event"),
        Provider::Gogs => header("x-gogs-event"),
    }
    .unwrap_or_default()
    .to_owned();
    let is_push = match provider {
        Provider::GitLab => event == "Push Hook" || event == "Tag Push Hook",
        _ => event == "push",
    };
    if !is_push {
        return Ok(Event::Ignored(event));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(e.to_string()))?;
    let mut urls = Vec::new();
    for obj in ["repository", "project"] {
        for field in [
            "clone_url",
            "ssh_url",
            "git_url",
            "html_url",
            "git_http_url",
            "git_ssh_url",
            "web_url",
            "homepage",
            "url",
        ] {
            if let Some(u) = v[obj][field].as_str()
                && !u.is_empty()
                && !urls.iter().any(|x| x == u)
            {
                urls.push(u.to_owned());
            }
        }
    }
    if urls.is_empty() {
        return Err(WebhookError::BadPayload(
            "the payload names no repository URL".into(),
        ));
    }
    let commit = v["after"]
        .as_str()
        .or(v["checkout_sha"].as_str())
        .filter(|c| !c.is_empty() && c.bytes().any(|b| b != b'0'))
        .map(str::to_owned);
    Ok(Event::Push(Push {
        urls,
        git_ref: v["ref"].as_str().map(str::to_owned),
        commit,
    }))
}

/// A repository URL reduced to `host/path`, so that the https, ssh and web
/// forms of one repository compare equal: no scheme, userinfo, port,
/// trailing `/` or `.git`, and a lower-case host.
pub fn normalize_url(url: &str) -> String {
    let s = crate::url::redact(url);
    let rest = match s.split_once("://") {
        Some((_, r)) => r.to_owned(),
        // scp-like: git@host:org/repo
        None => s.replacen(':', "/", 1),
    };
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(&rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}")
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

fn signature_matches(hex_sig: &str, body: &[u8], secret: &[u8]) -> bool {
    let Ok(given) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    constant_time_eq(&given, &hmac_sha256(secret, body))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// RFC 4231 test cases 1 and 6 (a key longer than the block).
    #[test]
    fn hmac_vectors() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    #[test]
    fn providers_table() {
        let body = br#"{"ref":"refs/heads/main","after":"abc123","repository":{"clone_url":"https://git.example.com/org/app.git","ssh_url":"git@git.example.com:org/app.git"}}"#;
        let secret = b"s3cret";
        let sig = hex::encode(hmac_sha256(secret, body));
        let github_sig = format!("sha256={sig}");
        type Row<'a> = (Vec<(&'a str, &'a str)>, Result<Provider, WebhookError>);
        let rows: Vec<Row<'_>> = vec![
            (
                vec![
                    ("X-GitHub-Event", "push"),
                    ("X-Hub-Signature-256", &github_sig),
                ],
                Ok(Provider::GitHub),
            ),
            (
                vec![
                    ("X-GitHub-Event", "push"),
                    ("X-Hub-Signature-256", "sha256=00"),
                ],
                Err(WebhookError::BadSignature),
            ),
            (
                vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
                Err(WebhookError::BadSignature),
            ),
            (
                vec![("X-GitHub-Event", "push")],
                Err(WebhookError::MissingSignature("X-Hub-Signature-256")),
            ),
            (
                vec![
                    ("X-Gitlab-Event", "Push Hook"),
                    ("X-Gitlab-Token", "s3cret"),
                ],
                Ok(Provider::GitLab),
            ),
            (
                vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "s3cre")],
                Err(WebhookError::BadSignature),
            ),
            (
                vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", &sig)],
                Ok(Provider::Gitea),
            ),
            (
                vec![("X-Gogs-Event", "push"), ("X-Gogs-Signature", &sig)],
                Ok(Provider::Gogs),
            ),
            (
                vec![("X-Other", "push")],
                Err(WebhookError::UnknownProvider),
            ),
        ];
        for (pairs, want) in rows {
            let h = headers(&pairs);
            let got = verify(|k| h.get(k).map(String::as_str), body, secret);
            assert_eq!(got, want, "{pairs:?}");
        }
        // An empty configured secret authenticates nothing.
        let h = headers(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "")]);
        assert_eq!(
            verify(|k| h.get(k).map(String::as_str), body, b""),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn parse_push_and_ping() {
        let body = br#"{"ref":"refs/heads/main","after":"abc123","repository":{"clone_url":"https://git.example.com/org/app.git","ssh_url":"git@git.example.com:org/app.git"}}"#;
        let h = headers(&[("X-GitHub-Event", "push")]);
        let Event::Push(p) =
            parse(Provider::GitHub, |k| h.get(k).map(String::as_str), body).unwrap()
        else {
            panic!("a push");
        };
        assert_eq!(p.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(p.commit.as_deref(), Some("abc123"));
        assert_eq!(p.urls.len(), 2);

        let gitlab = br#"{"ref":"refs/heads/dev","checkout_sha":"def","project":{"git_http_url":"https://gitlab.example.com/g/app.git"}}"#;
        let h = headers(&[("X-Gitlab-Event", "Push Hook")]);
        let Event::Push(p) =
            parse(Provider::GitLab, |k| h.get(k).map(String::as_str), gitlab).unwrap()
        else {
            panic!("a push");
        };
        assert_eq!(p.urls, ["https://gitlab.example.com/g/app.git"]);

        let h = headers(&[("X-GitHub-Event", "ping")]);
        assert_eq!(
            parse(Provider::GitHub, |k| h.get(k).map(String::as_str), b"{}").unwrap(),
            Event::Ignored("ping".into())
        );
        let h = headers(&[("X-GitHub-Event", "push")]);
        assert!(matches!(
            parse(Provider::GitHub, |k| h.get(k).map(String::as_str), b"{"),
            Err(WebhookError::BadPayload(_))
        ));
    }

    #[test]
    fn urls_normalize_across_forms() {
        let want = "git.example.com/org/app";
        for u in [
            "https://git.example.com/org/app.git",
            "https://user:pw@Git.Example.com:443/org/app/",
            "git@git.example.com:org/app.git",
            "ssh://git@git.example.com:22/org/app",
            "http://git.example.com/org/app",
        ] {
            assert_eq!(normalize_url(u), want, "{u}");
        }
        assert_ne!(normalize_url("https://git.example.com/org/app2"), want);
    }
}
