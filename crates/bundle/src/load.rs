//! The one place the compiler reads the disk: loading a checked-out
//! directory into a [`RepoTree`]. Symlinks are recorded, not followed, so
//! the tree's own checks decide whether they stay inside the repository.
//! Files are listed with their sizes and read only when the compiler needs
//! them, so an ignored or oversized file is never read.

use crate::tree::{BlobSource, RepoTree};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads files of a directory by their path relative to it.
struct DirSource {
    root: PathBuf,
}

impl BlobSource for DirSource {
    fn read_blob(&self, id: &str) -> Result<Vec<u8>, String> {
        std::fs::read(self.root.join(id)).map_err(|e| e.to_string())
    }
}

/// Lists every file and symlink under `root`, skipping `.git`. Names that
/// are not UTF-8 are left out and listed in [`RepoTree::skipped`], as the
/// git compile does.
pub fn load_dir(root: &Path) -> io::Result<RepoTree> {
    let mut tree = RepoTree::with_source(Arc::new(DirSource {
        root: root.to_owned(),
    }));
    walk(root, root, &mut tree)?;
    Ok(tree)
}

fn walk(root: &Path, dir: &Path, tree: &mut RepoTree) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let relative = path.strip_prefix(root).map_err(io::Error::other)?;
        let Some(rel) = relative.to_str().map(|r| r.replace('\\', "/")) else {
            tree.skipped.push(format!(
                "{}: the name is not UTF-8; skipped",
                relative.to_string_lossy()
            ));
            continue;
        };
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            match target.to_str() {
                Some(t) => tree.insert_symlink(&rel, t),
                None => tree
                    .skipped
                    .push(format!("{rel}: the symlink target is not UTF-8; skipped")),
            }
        } else if kind.is_dir() {
            if entry.file_name() != ".git" {
                walk(root, &path, tree)?;
            }
        } else if kind.is_file() {
            tree.insert_blob(&rel, entry.metadata()?.len(), rel.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_are_skipped_and_named() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("flotilla-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("app/ok.yaml"), "a: 1").unwrap();
        let bad = dir
            .join("app")
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff.yaml"));
        std::fs::write(&bad, "b: 2").unwrap();
        let tree = load_dir(&dir).unwrap();
        assert_eq!(tree.paths().collect::<Vec<_>>(), ["app/ok.yaml"]);
        assert_eq!(tree.skipped.len(), 1, "{:?}", tree.skipped);
        assert!(tree.skipped[0].contains("not UTF-8"), "{:?}", tree.skipped);
        assert_eq!(
            tree.read("app/ok.yaml").unwrap().as_deref(),
            Some(&b"a: 1"[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
