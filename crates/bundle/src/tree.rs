//! A repository tree in memory: relative paths to files or symlink targets.
//! The git crate builds one from a commit and `plan` from a directory;
//! compiling it never touches anything outside the tree, and a symlink can
//! only resolve to another entry of the tree.
//!
//! A file's bytes may be held in memory or read on demand from the tree's
//! [`BlobSource`] (a git object database, a directory), with its size known
//! up front: the compiler checks sizes before it reads anything, and never
//! reads a file it does not use (an ignored 500 MB blob costs nothing).

use crate::error::{BundleError, Result};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a tree's deferred files come from.
pub trait BlobSource: Send + Sync {
    /// The bytes of the blob with this id; the error says why not.
    fn read_blob(&self, id: &str) -> std::result::Result<Vec<u8>, String>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    /// A file whose bytes are read from the tree's source when needed.
    Blob {
        size: u64,
        id: String,
    },
    /// The link's target exactly as stored.
    Symlink(String),
}

#[derive(Clone, Default)]
pub struct RepoTree {
    entries: BTreeMap<String, Node>,
    source: Option<Arc<dyn BlobSource>>,
    /// Entries left out, with why (a name that is not UTF-8), for warnings.
    pub skipped: Vec<String>,
}

impl std::fmt::Debug for RepoTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoTree")
            .field("entries", &self.entries.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl PartialEq for RepoTree {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.skipped == other.skipped
    }
}

const MAX_SYMLINK_HOPS: usize = 16;

impl RepoTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree whose [`Node::Blob`] entries are read from `source`.
    pub fn with_source(source: Arc<dyn BlobSource>) -> Self {
        RepoTree {
            source: Some(source),
            ..Default::default()
        }
    }

    /// Adds a file; `path` is relative with `/` separators.
    pub fn insert_file(&mut self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.entries.insert(clean(path), Node::File(bytes.into()));
    }

    /// Adds a file whose bytes the source reads on demand.
    pub fn insert_blob(&mut self, path: &str, size: u64, id: impl Into<String>) {
        self.entries.insert(
            clean(path),
            Node::Blob {
                size,
                id: id.into(),
            },
        );
    }

    pub fn insert_symlink(&mut self, path: &str, target: &str) {
        self.entries
            .insert(clean(path), Node::Symlink(target.to_owned()));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Entries under directory `dir` ("" for the root), sorted.
    pub fn entries_under<'a>(
        &'a self,
        dir: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
            .map(|(p, n)| (p.as_str(), n))
    }

    /// Whether some entry lives under `dir`.
    pub fn is_dir(&self, dir: &str) -> bool {
        dir.is_empty() || self.entries_under(dir).next().is_some()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// The file `path` names after following symlinks inside the tree, or
    /// `None` when nothing is there. A link that points outside the
    /// repository is refused.
    pub fn resolve(&self, path: &str) -> Result<Option<(&str, &Node)>> {
        let mut current = path.to_owned();
        for _ in 0..MAX_SYMLINK_HOPS {
            match self.entries.get_key_value(&current) {
                None => return Ok(None),
                Some((_, Node::Symlink(target))) => {
                    let dir = parent(&current);
                    current = join_within(dir, target).map_err(|why| BundleError::PathEscapes {
                        path: path.to_owned(),
                        why: format!("symlink to {target:?} {why}"),
                    })?;
                }
                Some((p, node)) => return Ok(Some((p.as_str(), node))),
            }
        }
        Err(BundleError::PathEscapes {
            path: path.to_owned(),
            why: "too many levels of symlinks".into(),
        })
    }

    /// A file's size in bytes, without reading it.
    pub fn size(&self, path: &str) -> Result<Option<u64>> {
        Ok(self.resolve(path)?.map(|(_, node)| match node {
            Node::File(b) => b.len() as u64,
            Node::Blob { size, .. } => *size,
            Node::Symlink(_) => 0,
        }))
    }

    /// A file's bytes, following symlinks inside the tree.
    pub fn read(&self, path: &str) -> Result<Option<Cow<'_, [u8]>>> {
        let Some((_, node)) = self.resolve(path)? else {
            return Ok(None);
        };
        match node {
            Node::File(bytes) => Ok(Some(Cow::Borrowed(bytes))),
            Node::Blob { id, .. } => {
                let source = self
                    .source
                    .as_ref()
                    .ok_or_else(|| BundleError::Unreadable {
                        path: path.to_owned(),
                        message: "the tree has no source for its blobs".into(),
                    })?;
                source
                    .read_blob(id)
                    .map(|b| Some(Cow::Owned(b)))
                    .map_err(|message| BundleError::Unreadable {
                        path: path.to_owned(),
                        message,
                    })
            }
            Node::Symlink(_) => unreachable!("resolve follows symlinks"),
        }
    }

    /// Reads a file after checking its size against `limit`.
    pub fn read_limited(&self, path: &str, limit: usize) -> Result<Option<Cow<'_, [u8]>>> {
        if let Some(size) = self.size(path)?
            && size > limit as u64
        {
            return Err(BundleError::ManifestTooLarge {
                path: path.to_owned(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit,
            });
        }
        self.read(path)
    }
}

fn clean(path: &str) -> String {
    path.trim_start_matches("./").to_owned()
}

/// The directory part of a relative path ("" at the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// Joins `rel` onto `dir` and normalizes it, refusing absolute paths and
/// any `..` that climbs above the repository root.
pub fn join_within(dir: &str, rel: &str) -> std::result::Result<String, String> {
    if rel.starts_with('/') || rel.starts_with('\\') || rel.get(1..2) == Some(":") {
        return Err("is an absolute path".into());
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("climbs above the repository root".into());
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Normalizes a user-supplied path inside the repository (a GitRepo path,
/// `kustomize.dir`, a values file), naming `what` in the error.
pub fn safe_path(base: &str, rel: &str, what: &str) -> Result<String> {
    join_within(base, rel).map_err(|why| BundleError::PathEscapes {
        path: format!("{what} {rel:?}"),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn join_within_table() {
        let ok = [
            ("", "a/b", "a/b"),
            ("a", "./b", "a/b"),
            ("a/b", "../c", "a/c"),
            ("a", "b/../../c", "c"),
            ("", ".", ""),
        ];
        for (dir, rel, want) in ok {
            assert_eq!(join_within(dir, rel).as_deref(), Ok(want), "{dir} + {rel}");
        }
        for (dir, rel) in [
            ("", ".."),
            ("a", "../../x"),
            ("", "/etc/passwd"),
            ("a", "b/../../../x"),
        ] {
            assert!(
                join_within(dir, rel).is_err(),
                "{dir} + {rel} must be refused"
            );
        }
    }

    #[test]
    fn symlinks_resolve_inside_and_never_outside() {
        let mut t = RepoTree::new();
        t.insert_file("base/cm.yaml", "kind: ConfigMap");
        t.insert_symlink("app/cm.yaml", "../base/cm.yaml");
        t.insert_symlink("app/loop.yaml", "loop.yaml");
        t.insert_symlink("app/evil.yaml", "../../etc/passwd");
        t.insert_symlink("app/abs.yaml", "/etc/passwd");
        assert_eq!(
            t.read("app/cm.yaml").unwrap().as_deref(),
            Some(&b"kind: ConfigMap"[..])
        );
        assert_eq!(t.size("app/cm.yaml").unwrap(), Some(15));
        assert_eq!(t.read("app/missing.yaml").unwrap(), None);
        for bad in ["app/evil.yaml", "app/abs.yaml", "app/loop.yaml"] {
            let err = t.read(bad).unwrap_err();
            assert!(
                matches!(err, BundleError::PathEscapes { .. }),
                "{bad}: {err}"
            );
            assert!(
                err.to_string().starts_with(bad),
                "names the offender: {err}"
            );
        }
    }

    #[test]
    fn entries_under_a_directory_only() {
        let mut t = RepoTree::new();
        for p in ["a/x", "a/y/z", "ab/x", "b"] {
            t.insert_file(p, "");
        }
        let under: Vec<&str> = t.entries_under("a").map(|(p, _)| p).collect();
        assert_eq!(under, ["a/x", "a/y/z"]);
        assert!(t.is_dir("a/y") && !t.is_dir("c"));
    }

    struct Counting(AtomicUsize);

    impl BlobSource for Counting {
        fn read_blob(&self, id: &str) -> std::result::Result<Vec<u8>, String> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(id.as_bytes().to_vec())
        }
    }

    #[test]
    fn blobs_are_read_on_demand_and_checked_for_size_first() {
        let source = Arc::new(Counting(AtomicUsize::new(0)));
        let mut t = RepoTree::with_source(source.clone());
        t.insert_blob("small.yaml", 5, "hello");
        t.insert_blob("huge.bin", 500 << 20, "never-read");
        assert_eq!(t.size("huge.bin").unwrap(), Some(500 << 20));
        assert_eq!(source.0.load(Ordering::Relaxed), 0, "sizes need no read");
        let err = t.read_limited("huge.bin", 1 << 20).unwrap_err();
        assert!(matches!(err, BundleError::ManifestTooLarge { .. }), "{err}");
        assert_eq!(source.0.load(Ordering::Relaxed), 0, "refused unread");
        assert_eq!(
            t.read_limited("small.yaml", 1 << 20).unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(source.0.load(Ordering::Relaxed), 1);
    }
}
