//! A repository tree in memory: relative paths to file bytes or symlink
//! targets. The git crate builds one from a commit and `plan` from a
//! directory; compiling it never touches the disk, and a symlink can only
//! resolve to another entry of the tree.

use crate::error::{BundleError, Result};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    /// The link's target exactly as stored.
    Symlink(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoTree {
    entries: BTreeMap<String, Node>,
}

const MAX_SYMLINK_HOPS: usize = 16;

impl RepoTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file; `path` is relative with `/` separators.
    pub fn insert_file(&mut self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.entries.insert(
            path.trim_start_matches("./").to_owned(),
            Node::File(bytes.into()),
        );
    }

    pub fn insert_symlink(&mut self, path: &str, target: &str) {
        self.entries.insert(
            path.trim_start_matches("./").to_owned(),
            Node::Symlink(target.to_owned()),
        );
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

    /// A file's bytes, following symlinks inside the tree. A link that
    /// points outside the repository is refused.
    pub fn read(&self, path: &str) -> Result<Option<&[u8]>> {
        let mut current = path.to_owned();
        for _ in 0..MAX_SYMLINK_HOPS {
            match self.entries.get(&current) {
                None => return Ok(None),
                Some(Node::File(bytes)) => return Ok(Some(bytes)),
                Some(Node::Symlink(target)) => {
                    let dir = parent(&current);
                    current = join_within(dir, target).map_err(|why| BundleError::PathEscapes {
                        path: path.to_owned(),
                        why: format!("symlink to {target:?} {why}"),
                    })?;
                }
            }
        }
        Err(BundleError::PathEscapes {
            path: path.to_owned(),
            why: "too many levels of symlinks".into(),
        })
    }
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
            t.read("app/cm.yaml").unwrap(),
            Some(&b"kind: ConfigMap"[..])
        );
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
}
