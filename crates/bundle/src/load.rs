//! The one place the compiler reads the disk: loading a checked-out
//! directory into a [`RepoTree`]. Symlinks are recorded, not followed, so
//! the tree's own checks decide whether they stay inside the repository.

use crate::tree::RepoTree;
use std::io;
use std::path::Path;

/// Loads every file and symlink under `root`, skipping `.git`.
pub fn load_dir(root: &Path) -> io::Result<RepoTree> {
    let mut tree = RepoTree::new();
    walk(root, root, &mut tree)?;
    Ok(tree)
}

fn walk(root: &Path, dir: &Path, tree: &mut RepoTree) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_string_lossy()
            .replace('\\', "/");
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            tree.insert_symlink(&rel, &target.to_string_lossy());
        } else if kind.is_dir() {
            if entry.file_name() != ".git" {
                walk(root, &path, tree)?;
            }
        } else if kind.is_file() {
            tree.insert_file(&rel, std::fs::read(&path)?);
        }
    }
    Ok(())
}
