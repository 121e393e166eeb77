//! Credentials and TLS settings for one repository, read from the Secret a
//! GitRepo names in `clientSecretName`, as Fleet reads it:
//! - `kubernetes.io/basic-auth` (or any Secret with `username` and
//!   `password`): HTTP basic auth, where the password may be a token;
//! - `kubernetes.io/ssh-auth` (or any Secret with `ssh-privatekey`): an ssh
//!   key, optionally with `ssh-publickey`, `passphrase` and `known_hosts`.
//!
//! Nothing here implements `Display`, and `Debug` redacts every secret, so
//! a credential cannot reach a log line by accident.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub basic: Option<Basic>,
    pub ssh: Option<SshKey>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    pub username: String,
    pub password: String,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SshKey {
    pub username: Option<String>,
    pub private_key: String,
    pub public_key: Option<String>,
    pub passphrase: Option<String>,
    /// known_hosts lines; when present the server's host key must match.
    pub known_hosts: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("basic", &self.basic.as_ref().map(|_| "<redacted>"))
            .field("ssh", &self.ssh.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for Basic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Basic(<redacted>)")
    }
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SshKey(<redacted>)")
    }
}

impl Credentials {
    /// Reads a Secret's `type` and decoded `data`. An error names the
    /// missing or malformed key, never a value.
    pub fn from_secret(
        secret_type: Option<&str>,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, String> {
        let text = |k: &str| -> Result<Option<String>, String> {
            data.get(k)
                .map(|v| {
                    String::from_utf8(v.clone())
                        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                        .map_err(|_| format!("key {k:?} is not UTF-8"))
                })
                .transpose()
        };
        let wants_ssh =
            secret_type == Some("kubernetes.io/ssh-auth") || data.contains_key("ssh-privatekey");
        let wants_basic = secret_type == Some("kubernetes.io/basic-auth")
            || data.contains_key("username")
            || data.contains_key("password");
        let mut creds = Credentials::default();
        if wants_ssh {
            let Some(private_key) = text("ssh-privatekey")? else {
                return Err("an ssh-auth Secret needs the key \"ssh-privatekey\"".into());
            };
            let mut key = private_key;
            key.push('\n');
            creds.ssh = Some(SshKey {
                username: text("username")?,
                private_key: key,
                public_key: text("ssh-publickey")?,
                passphrase: text("passphrase")?,
                known_hosts: text("known_hosts")?,
            });
        } else if wants_basic {
            let password = text("password")?.unwrap_or_default();
            if password.is_empty() {
                return Err("a basic-auth Secret needs a non-empty \"password\" (or token)".into());
            }
            creds.basic = Some(Basic {
                username: text("username")?.unwrap_or_else(|| "git".into()),
                password,
            });
        } else {
            return Err(
                "the Secret has neither \"username\"/\"password\" nor \"ssh-privatekey\"".into(),
            );
        }
        Ok(creds)
    }

    /// The secret strings, to scrub from any message.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(b) = &self.basic {
            out.push(b.password.as_str());
        }
        if let Some(k) = &self.ssh {
            out.push(k.private_key.as_str());
            if let Some(p) = &k.passphrase {
                out.push(p.as_str());
            }
        }
        out
    }
}

/// How to trust the server's TLS certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificates; the server's certificate must be issued by one of
    /// them (or be one of them), or pass the system trust store.
    pub ca_bundle: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_bundle", &self.ca_bundle.as_ref().map(|b| b.len()))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// Does a known_hosts file list this host key? `host` is the name the
/// client connected to, `key_type` the ssh name of the key (e.g.
/// `ssh-ed25519`) and `key` its raw bytes. Hashed host names (`|1|...`)
/// are not supported and never match. Ports use the `[host]:port` form.
pub fn known_hosts_match(
    known_hosts: &str,
    host: &str,
    port: Option<u16>,
    key_type: &str,
    key: &[u8],
) -> bool {
    use base64::Engine as _;
    let wanted_host = match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_owned(),
    };
    known_hosts.lines().any(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            return false;
        }
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(kt), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let host_ok = hosts.split(',').any(|h| h == wanted_host);
        host_ok
            && kt == key_type
            && base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|k| k == key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn secrets_table() {
        let basic = Credentials::from_secret(
            Some("kubernetes.io/basic-auth"),
            &data(&[("username", "bob"), ("password", "hunter2\n")]),
        )
        .unwrap();
        assert_eq!(basic.basic.as_ref().unwrap().username, "bob");
        assert_eq!(basic.basic.as_ref().unwrap().password, "hunter2");

        let token = Credentials::from_secret(None, &data(&[("password", "ghp_x")])).unwrap();
        assert_eq!(token.basic.unwrap().username, "git", "token without a user");

        let ssh = Credentials::from_secret(
            Some("kubernetes.io/ssh-auth"),
            &data(&[
                ("ssh-privatekey", "-----BEGIN KEY-----"),
                ("known_hosts", "h ssh-ed25519 AAAA"),
            ]),
        )
        .unwrap();
        assert!(ssh.ssh.unwrap().known_hosts.is_some());

        for (ty, d, why) in [
            (Some("kubernetes.io/ssh-auth"), data(&[]), "ssh-privatekey"),
            (
                Some("kubernetes.io/basic-auth"),
                data(&[("username", "u")]),
                "password",
            ),
            (Some("Opaque"), data(&[("token", "x")]), "neither"),
        ] {
            let err = Credentials::from_secret(ty, &d).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn debug_redacts() {
        let c =
            Credentials::from_secret(None, &data(&[("username", "bob"), ("password", "hunter2")]))
                .unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("bob"), "{s}");
        assert_eq!(c.secrets(), vec!["hunter2"]);
    }

    #[test]
    fn known_hosts_table() {
        use base64::Engine as _;
        let key = b"raw-key-bytes";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let file = format!(
            "# comment\ngit.example.com,10.0.0.1 ssh-ed25519 {b64}\n[git.example.com]:2222 ssh-rsa {b64}\n|1|abc|def ssh-ed25519 {b64}\n"
        );
        type Row<'a> = (&'a str, Option<u16>, &'a str, &'a [u8], bool);
        let rows: [Row<'_>; 6] = [
            ("git.example.com", None, "ssh-ed25519", key, true),
            ("10.0.0.1", Some(22), "ssh-ed25519", key, true),
            ("git.example.com", Some(2222), "ssh-rsa", key, true),
            ("git.example.com", Some(2222), "ssh-ed25519", key, false),
            ("git.example.com", None, "ssh-ed25519", b"other", false),
            ("evil.example.com", None, "ssh-ed25519", key, false),
        ];
        for (host, port, kt, k, want) in rows {
            assert_eq!(
                known_hosts_match(&file, host, port, kt, k),
                want,
                "{host} {port:?} {kt}"
            );
        }
    }
}
