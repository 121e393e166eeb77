//! Shared bare mirrors, one per (URL, credentials): every GitRepo reading
//! the same repository with the same rights fetches into, and reads from,
//! the same mirror, so N GitRepos on one branch cost one fetch per new
//! commit, not N clones.
//!
//! - [`Mirrors::ls_remote`] connects and lists the refs: the cheap poll.
//! - [`Mirrors::sync`] makes a commit present, fetching only the one ref
//!   that leads to it, and only when the mirror does not have it yet. A
//!   per-mirror lock makes concurrent callers wait for one fetch and then
//!   find the commit there.
//!
//! Every libgit2 call runs on `spawn_blocking` under a deadline: the
//! transfer callbacks abort a fetch that runs past it, and the caller stops
//! waiting at it.

use crate::auth::{Credentials, Tls, known_hosts_match};
use crate::url::{mirror_key, redact, split};
use git2::{
    AutotagOption, CertificateCheckStatus, CredentialType, Direction, FetchOptions, Oid,
    RemoteCallbacks, Repository,
};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where to read a repository from, and with which rights. `Debug` shows
/// the URL without its userinfo and no credential.
#[derive(Clone, Default)]
pub struct Source {
    /// The URL as the GitRepo gives it; userinfo in it is used as basic
    /// auth when no Secret is named, and never shown.
    pub url: String,
    pub credentials: Credentials,
    pub tls: Tls,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &self.display_url())
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Source {
    pub fn public(url: impl Into<String>) -> Self {
        Source {
            url: url.into(),
            ..Default::default()
        }
    }

    /// The URL as it may be shown: no userinfo, query credentials masked.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// The mirror this source reads: one per URL and credentials actually
    /// used, so a GitRepo never reads what someone else's credentials
    /// fetched.
    pub fn mirror_key(&self) -> String {
        mirror_key(&self.url, &self.access_digest())
    }

    /// A digest of what decides what this source may read: the effective
    /// credentials (a Secret's contents or the URL's userinfo) and the TLS
    /// trust (a mirror fetched without verification is not shared with
    /// GitRepos that verify). Never the secrets themselves.
    pub fn access_digest(&self) -> String {
        use sha2::Digest;
        let (_, creds) = self.effective();
        let mut h = sha2::Sha256::new();
        let mut part = |label: &str, value: Option<&[u8]>| {
            h.update(label.as_bytes());
            match value {
                Some(v) => {
                    h.update((v.len() as u64).to_le_bytes());
                    h.update(v);
                }
                None => h.update(b"-"),
            }
        };
        if let Some(b) = &creds.basic {
            part("user", Some(b.username.as_bytes()));
            part("password", Some(b.password.as_bytes()));
        }
        if let Some(k) = &creds.ssh {
            part("ssh-user", k.username.as_deref().map(str::as_bytes));
            part("ssh-key", Some(k.private_key.as_bytes()));
            part("ssh-passphrase", k.passphrase.as_deref().map(str::as_bytes));
            part("known-hosts", k.known_hosts.as_deref().map(str::as_bytes));
        }
        part("ca", self.tls.ca_bundle.as_deref());
        part(
            "insecure",
            Some(if self.tls.insecure_skip_verify {
                b"1"
            } else {
                b"0"
            }),
        );
        if creds.basic.is_none() && creds.ssh.is_none() && self.tls == Tls::default() {
            return String::new();
        }
        hex::encode(h.finalize())
    }

    /// The URL handed to libgit2 (without userinfo) and the credentials
    /// to answer its challenges with. Userinfo counts only when no Secret
    /// is named: `user:password@`, or a token alone as the user name
    /// (`https://TOKEN@host/...`, sent with an empty password, as git and
    /// Fleet send it).
    fn effective(&self) -> (String, Credentials) {
        let s = split(&self.url);
        let mut creds = self.credentials.clone();
        let is_http = s.url.starts_with("https://") || s.url.starts_with("http://");
        if creds.basic.is_none() && creds.ssh.is_none() {
            match (&s.username, &s.password) {
                (user, Some(password)) => {
                    creds.basic = Some(crate::auth::Basic {
                        username: user.clone().unwrap_or_else(|| "git".into()),
                        password: password.clone(),
                    });
                }
                (Some(token), None) if is_http => {
                    creds.basic = Some(crate::auth::Basic {
                        username: token.clone(),
                        password: String::new(),
                    });
                }
                _ => {}
            }
        }
        (s.url, creds)
    }

    fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .credentials
            .secrets()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let s = split(&self.url);
        if let Some(p) = s.password {
            out.push(p);
        }
        if self.url.contains("://")
            && !self.url.starts_with("ssh://")
            && let Some(u) = s.username
        {
            // A token given as the user name.
            out.push(u);
        }
        out
    }
}

/// What a GitRepo follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Want {
    Branch(String),
    /// A full commit SHA or a tag.
    Revision(String),
}

impl Want {
    /// From a GitRepo's `branch` and `revision` (revision wins; the branch
    /// defaults to `master`, as in Fleet).
    pub fn of(branch: Option<&str>, revision: Option<&str>) -> Want {
        match (
            revision.filter(|r| !r.is_empty()),
            branch.filter(|b| !b.is_empty()),
        ) {
            (Some(r), _) => Want::Revision(r.to_owned()),
            (None, Some(b)) => Want::Branch(b.to_owned()),
            (None, None) => Want::Branch("master".into()),
        }
    }

    /// A pinned commit SHA: nothing to poll.
    pub fn pinned_commit(&self) -> Option<Oid> {
        match self {
            Want::Revision(r) if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Oid::from_str(r).ok()
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("branch {branch:?} does not exist in {url}")]
    BranchNotFound { url: String, branch: String },
    #[error("revision {revision:?} is neither a tag nor a commit of {url}")]
    RevisionNotFound { url: String, revision: String },
    #[error("authentication to {url} failed: {message}")]
    Auth { url: String, message: String },
    #[error("{url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("git operation on {url} did not finish within {seconds}s")]
    Timeout { url: String, seconds: u64 },
    #[error("{url}: {message}")]
    Other { url: String, message: String },
}

impl GitError {
    /// The condition reason this error shows as.
    pub fn reason(&self) -> &'static str {
        match self {
            GitError::BranchNotFound { .. } => "BranchNotFound",
            GitError::RevisionNotFound { .. } => "RevisionNotFound",
            GitError::Auth { .. } => "AuthenticationFailed",
            GitError::Unreachable { .. } => "RepoUnreachable",
            GitError::Timeout { .. } => "Timeout",
            GitError::Other { .. } => "GitError",
        }
    }
}

/// The refs a remote advertised: name -> commit (annotated tags peeled).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    pub url: String,
    pub refs: HashMap<String, Oid>,
}

impl RemoteRefs {
    /// The commit `want` names, and the refspec that fetches it.
    pub fn pick(&self, want: &Want) -> Result<(Oid, String), GitError> {
        match want {
            Want::Branch(b) => {
                let name = format!("refs/heads/{b}");
                let oid = self
                    .refs
                    .get(&name)
                    .ok_or_else(|| GitError::BranchNotFound {
                        url: self.url.clone(),
                        branch: b.clone(),
                    })?;
                Ok((*oid, format!("+{name}:{name}")))
            }
            Want::Revision(r) => {
                if let Some(oid) = want.pinned_commit() {
                    return Ok((oid, r.clone()));
                }
                let name = format!("refs/tags/{r}");
                let oid = self
                    .refs
                    .get(&format!("{name}^{{}}"))
                    .or_else(|| self.refs.get(&name))
                    .ok_or_else(|| GitError::RevisionNotFound {
                        url: self.url.clone(),
                        revision: r.clone(),
                    })?;
                Ok((*oid, format!("+{name}:{name}")))
            }
        }
    }
}

/// What [`Mirrors::sync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synced {
    pub commit: Oid,
    /// Whether it had to fetch (false: the mirror had the commit).
    pub fetched: bool,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub ls_remotes: AtomicU64,
    pub fetches: AtomicU64,
}

/// The configured timeout, for messages from inside libgit2 callbacks.
static TIMEOUT_SECS: AtomicU64 = AtomicU64::new(0);

pub struct Mirrors {
    root: PathBuf,
    timeout: Duration,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Mirrors with a libgit2 call still blocked past its deadline. libgit2
    /// has no read timeout of its own (setting one needs `unsafe`), so a
    /// server that accepts and never answers keeps that thread; new calls
    /// on the mirror fail at once until it returns, so one silent server
    /// costs one thread, not one per poll.
    stuck: Arc<Mutex<std::collections::HashSet<String>>>,
    pub stats: Stats,
}

impl Mirrors {
    /// Mirrors live under `root`, one bare repository per key.
    pub fn new(root: impl Into<PathBuf>, timeout: Duration) -> Self {
        TIMEOUT_SECS.store(timeout.as_secs(), Ordering::Relaxed);

        Mirrors {
            root: root.into(),
            timeout,
            locks: Mutex::new(HashMap::new()),
            stuck: Arc::new(Mutex::new(std::collections::HashSet::new())),
            stats: Stats::default(),
        }
    }

    pub fn path(&self, source: &Source) -> PathBuf {
        self.root.join(format!("{}.git", source.mirror_key()))
    }

    /// Opens (creating if needed) the mirror of `source`, for reading.
    pub fn open(&self, source: &Source) -> Result<Repository, GitError> {
        open_or_init(&self.path(source)).map_err(|e| other(source, &e))
    }

    /// Proves that this source's credentials can still read the remote
    /// (an ls-remote whose listing is dropped). A pinned commit the mirror
    /// already holds needs no fetch, but a GitRepo that has not read it
    /// before must pass this first: the mirror may hold it because of an
    /// earlier GitRepo, and access may have been revoked since.
    pub async fn authorize(&self, source: &Source) -> Result<(), GitError> {
        self.ls_remote(source).await.map(|_| ())
    }

    /// Connects and lists the remote's refs: no objects are transferred.
    pub async fn ls_remote(&self, source: &Source) -> Result<RemoteRefs, GitError> {
        self.stats.ls_remotes.fetch_add(1, Ordering::Relaxed);
        let src = source.clone();
        let deadline = Instant::now() + self.timeout;
        self.blocking(source, move || ls_remote_blocking(&src, deadline))
            .await
    }

    /// Makes the commit `want` names present in the mirror. `refs` is a
    /// listing the caller already has (from a poll); without one, this
    /// lists the remote first, except for a pinned SHA the mirror has.
    pub async fn sync(
        &self,
        source: &Source,
        want: &Want,
        refs: Option<&RemoteRefs>,
    ) -> Result<Synced, GitError> {
        let path = self.path(source);
        if let Some(oid) = want.pinned_commit() {
            let p = path.clone();
            if self
                .blocking(source, move || Ok(has_commit(&p, oid)))
                .await?
            {
                return Ok(Synced {
                    commit: oid,
                    fetched: false,
                });
            }
        }
        let listed;
        let refs = match refs {
            Some(r) => r,
            None if want.pinned_commit().is_some() => {
                listed = RemoteRefs::default();
                &listed
            }
            None => {
                listed = self.ls_remote(source).await?;
                &listed
            }
        };
        let (commit, refspec) = refs.pick(want)?;

        let lock = {
            let mut locks = self.locks.lock().expect("mirror locks");
            Arc::clone(locks.entry(source.mirror_key()).or_default())
        };
        let _guard = lock.lock().await;
        let p = path.clone();
        if self
            .blocking(source, move || Ok(has_commit(&p, commit)))
            .await?
        {
            return Ok(Synced {
                commit,
                fetched: false,
            });
        }
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let src = source.clone();
        let deadline = Instant::now() + self.timeout;
        let is_pinned = want.pinned_commit().is_some();
        self.blocking(source, move || {
            let repo = open_or_init(&path).map_err(|e| other(&src, &e))?;
            let first = fetch_blocking(&repo, &src, &[refspec.as_str()], deadline);
            if is_pinned && (first.is_err() || !has_commit(&path, commit)) {
                // Not every server serves a bare SHA: fetch the branches.
                fetch_blocking(&repo, &src, &["+refs/heads/*:refs/heads/*"], deadline)?;
            } else {
                first?;
            }
            Ok(())
        })
        .await?;
        let p = self.path(source);
        if !self
            .blocking(source, move || Ok(has_commit(&p, commit)))
            .await?
        {
            return Err(match want {
                Want::Revision(r) => GitError::RevisionNotFound {
                    url: source.display_url(),
                    revision: r.clone(),
                },
                Want::Branch(b) => GitError::Other {
                    url: source.display_url(),
                    message: format!("the fetch of branch {b:?} did not bring commit {commit}"),
                },
            });
        }
        tracing::info!(url = %source.display_url(), %commit, "fetched");
        Ok(Synced {
            commit,
            fetched: true,
        })
    }

    /// Runs `f` on the blocking pool, giving up at the deadline. A call on
    /// a mirror whose previous call is still blocked fails at once.
    async fn blocking<T: Send + 'static>(
        &self,
        source: &Source,
        f: impl FnOnce() -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let key = source.mirror_key();
        let timed_out = || GitError::Timeout {
            url: source.display_url(),
            seconds: self.timeout.as_secs(),
        };
        if self.stuck.lock().expect("stuck lock").contains(&key) {
            return Err(timed_out());
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stuck, flag, k) = (Arc::clone(&self.stuck), Arc::clone(&done), key.clone());
        let task = tokio::task::spawn_blocking(move || {
            let out = f();
            flag.store(true, Ordering::Release);
            // Clear the mark this call left if it outlived its deadline.
            stuck.lock().expect("stuck lock").remove(&k);
            out
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(other(source, &join)),
            Err(_) => {
                let mut stuck = self.stuck.lock().expect("stuck lock");
                if !done.load(Ordering::Acquire) {
                    stuck.insert(key);
                }
                Err(timed_out())
            }
        }
    }
}

fn other(source: &Source, e: &dyn std::fmt::Display) -> GitError {
    GitError::Other {
        url: source.display_url(),
        message: scrub(source, &e.to_string()),
    }
}

fn scrub(source: &Source, message: &str) -> String {
    let secrets = source.secrets();
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    crate::url::scrub(message, &refs)
}

fn open_or_init(path: &Path) -> Result<Repository, git2::Error> {
    match Repository::open_bare(path) {
        Ok(r) => Ok(r),
        Err(_) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| git2::Error::from_str(&format!("{}: {e}", parent.display())))?;
            }
            Repository::init_bare(path)
        }
    }
}

fn has_commit(path: &Path, oid: Oid) -> bool {
    Repository::open_bare(path)
        .ok()
        .is_some_and(|r| r.find_commit(oid).is_ok())
}

/// Answers libgit2's challenges from the credentials, once per kind: a
/// second challenge means the server rejected them.
fn callbacks<'a>(
    creds: &'a Credentials,
    tls: &'a Tls,
    deadline: Instant,
    rejected: &'a Cell<bool>,
    host_key_mismatch: &'a Cell<bool>,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut asked: u32 = 0;
    cb.credentials(move |_url, user_from_url, allowed| {
        asked += 1;
        if asked > 1 {
            rejected.set(true);
            return Err(git2::Error::from_str("the server rejected the credentials"));
        }
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(k) = &creds.ssh
        {
            let user = k.username.as_deref().or(user_from_url).unwrap_or("git");
            return git2::Cred::ssh_key_from_memory(
                user,
                k.public_key.as_deref(),
                &k.private_key,
                k.passphrase.as_deref(),
            );
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(b) = &creds.basic
        {
            return git2::Cred::userpass_plaintext(&b.username, &b.password);
        }
        if allowed.contains(CredentialType::USERNAME) {
            return git2::Cred::username(user_from_url.unwrap_or("git"));
        }
        rejected.set(true);
        Err(git2::Error::from_str(
            "the repository needs credentials: name a Secret in clientSecretName",
        ))
    });
    cb.certificate_check(move |cert, host| {
        if let Some(hostkey) = cert.as_hostkey() {
            let known = creds.ssh.as_ref().and_then(|k| k.known_hosts.as_deref());
            let Some(known) = known else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
                host_key_mismatch.set(true);
                return Err(git2::Error::from_str("the server sent no host key"));
            };
            let (name, port) = match host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().ok()),
                _ => (host, None),
            };
            if known_hosts_match(known, name, port, kind.name(), key) {
                return Ok(CertificateCheckStatus::CertificateOk);
            }
            host_key_mismatch.set(true);
            return Err(git2::Error::from_str(&format!(
                "the host key of {host} is not in known_hosts"
            )));
        }
        if tls.insecure_skip_verify {
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        if let (Some(bundle), Some(x509)) = (&tls.ca_bundle, cert.as_x509())
            && crate::tls::verify(bundle, x509.data(), host)
        {
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    cb.transfer_progress(move |_| Instant::now() < deadline);
    cb.sideband_progress(move |_| Instant::now() < deadline);
    cb
}

/// Does `message` carry the HTTP status `code` as a number of its own
/// (not as digits of a path or a process id, as in `/tmp/x-24017`)?
fn has_status(message: &str, code: &str) -> bool {
    message.match_indices(code).any(|(i, _)| {
        let before = message[..i].chars().next_back();
        let after = message[i + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
    })
}

fn classify(
    source: &Source,
    e: &git2::Error,
    rejected: bool,
    host_key: bool,
    deadline: Instant,
) -> GitError {
    let url = source.display_url();
    let message = scrub(source, e.message());
    let lower = message.to_ascii_lowercase();
    if rejected
        || host_key
        || e.code() == git2::ErrorCode::Auth
        || e.code() == git2::ErrorCode::Certificate
        || lower.contains("authentication")
        || has_status(&lower, "401")
        || has_status(&lower, "403")
    {
        return GitError::Auth { url, message };
    }
    if e.code() == git2::ErrorCode::User && Instant::now() >= deadline {
        // A progress callback stopped the transfer at the deadline.
        return GitError::Timeout {
            url,
            seconds: TIMEOUT_SECS.load(Ordering::Relaxed),
        };
    }
    match e.class() {
        git2::ErrorClass::Net
        | git2::ErrorClass::Os
        | git2::ErrorClass::Ssl
        | git2::ErrorClass::Http
        | git2::ErrorClass::Ssh => GitError::Unreachable { url, message },
        _ if lower.contains("could not find repository")
            || lower.contains("not found")
            || lower.contains("failed to resolve path") =>
        {
            GitError::Unreachable { url, message }
        }
        _ => GitError::Other { url, message },
    }
}

fn ls_remote_blocking(source: &Source, deadline: Instant) -> Result<RemoteRefs, GitError> {
    let (url, creds) = source.effective();
    let rejected = Cell::new(false);
    let host_key = Cell::new(false);
    let mut remote = git2::Remote::create_detached(url.as_str())
        .map_err(|e| classify(source, &e, false, false, deadline))?;
    let cb = callbacks(&creds, &source.tls, deadline, &rejected, &host_key);
    let conn = remote.connect_auth(Direction::Fetch, Some(cb), None);
    let conn = conn.map_err(|e| classify(source, &e, rejected.get(), host_key.get(), deadline))?;
    let heads = conn
        .list()
        .map_err(|e| classify(source, &e, rejected.get(), host_key.get(), deadline))?;
    let refs = heads
        .iter()
        .map(|h| (h.name().to_owned(), h.oid()))
        .collect();
    Ok(RemoteRefs {
        url: source.display_url(),
        refs,
    })
}

fn fetch_blocking(
    repo: &Repository,
    source: &Source,
    refspecs: &[&str],
    deadline: Instant,
) -> Result<(), GitError> {
    let (url, creds) = source.effective();
    let rejected = Cell::new(false);
    let host_key = Cell::new(false);
    let mut remote = repo
        .remote_anonymous(&url)
        .map_err(|e| classify(source, &e, false, false, deadline))?;
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(
        &creds,
        &source.tls,
        deadline,
        &rejected,
        &host_key,
    ))
    .download_tags(AutotagOption::None)
    .update_fetchhead(false);
    remote
        .fetch(refspecs, Some(&mut opts), None)
        .map_err(|e| classify(source, &e, rejected.get(), host_key.get(), deadline))
}

#[cfg(test)]
mod status_tests {
    use super::has_status;

    #[test]
    fn http_status_codes_are_found_as_numbers_only() {
        assert!(has_status("unexpected http status code: 401", "401"));
        assert!(has_status(
            "request failed with status 403 (forbidden)",
            "403"
        ));
        assert!(!has_status(
            "failed to resolve path '/tmp/flotilla-git-rev-24017-3/nowhere'",
            "401"
        ));
        assert!(!has_status("object 4013abc not found", "401"));
    }
}
