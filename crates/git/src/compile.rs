//! A commit becomes bundles, recompiling only the bundle directories whose
//! git tree changed.
//!
//! 1. List the commit's tree: paths, blob ids and every directory's tree id.
//!    No file is read yet, except `.fleetignore` files and symlink targets.
//! 2. Plan the bundle directories from the paths alone
//!    ([`flotilla_bundle::plan_dirs`]).
//! 3. For each directory, a cache key from its tree id and everything else
//!    its compile depends on. A hit reuses the compiled bundle; a miss reads
//!    only that directory's files and compiles it.
//!
//! A directory whose subtree holds a symlink may read files outside itself,
//! so its key also carries the root tree id.

use flotilla_bundle::ignore::FleetIgnore;
use flotilla_bundle::{BundleError, CompileInput, CompiledBundle, RepoTree};
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const IGNORE_FILE: &str = ".fleetignore";

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("reading commit {commit}: {message}")]
    Git { commit: String, message: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// One commit's tree, listed without reading the files.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub root: Option<Oid>,
    /// File path -> blob id.
    pub files: BTreeMap<String, Oid>,
    /// Symlink path -> its target.
    pub symlinks: BTreeMap<String, String>,
    /// Directory path ("" for the root) -> tree id.
    pub dirs: HashMap<String, Oid>,
    /// Submodules are not followed.
    pub skipped: Vec<String>,
}

pub fn list_commit(repo: &Repository, commit: Oid) -> Result<Listing, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut listing = Listing {
        root: Some(tree.id()),
        ..Default::default()
    };
    listing.dirs.insert(String::new(), tree.id());
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        let path = format!("{dir}{name}");
        match entry.kind() {
            Some(ObjectType::Tree) => {
                listing.dirs.insert(path, entry.id());
            }
            Some(ObjectType::Blob) if entry.filemode() == 0o120000 => {
                match repo.find_blob(entry.id()) {
                    Ok(b) => {
                        listing
                            .symlinks
                            .insert(path, String::from_utf8_lossy(b.content()).into_owned());
                    }
                    Err(e) => {
                        failure = Some(e);
                        return TreeWalkResult::Abort;
                    }
                }
            }
            Some(ObjectType::Blob) => {
                listing.files.insert(path, entry.id());
            }
            _ => listing.skipped.push(path),
        }
        TreeWalkResult::Ok
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(listing),
    }
}

/// Compiled bundles by cache key. Keep the one a compile returns and hand
/// it to the next: entries the new commit does not use are dropped.
#[derive(Clone, Debug, Default)]
pub struct CompileCache {
    entries: HashMap<String, Option<Arc<CompiledBundle>>>,
}

impl CompileCache {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct CompiledCommit {
    pub bundles: Vec<Arc<CompiledBundle>>,
    /// Bundle directories compiled this time.
    pub compiled: Vec<String>,
    /// Bundle directories reused from the cache.
    pub reused: usize,
    pub cache: CompileCache,
    pub warnings: Vec<String>,
}

/// Compiles `commit`, reusing `cache` for unchanged directories.
pub fn compile_commit(
    repo: &Repository,
    commit: Oid,
    input: &CompileInput<'_>,
    cache: &CompileCache,
) -> Result<CompiledCommit, CompileError> {
    let git = |e: git2::Error| CompileError::Git {
        commit: commit.to_string(),
        message: e.message().to_owned(),
    };
    let listing = list_commit(repo, commit).map_err(git)?;

    // The skeleton: every path, but only the bytes planning needs.
    let mut skeleton = RepoTree::new();
    let mut ignore_files = Vec::new();
    for (path, blob) in &listing.files {
        if is_ignore_file(path) {
            let bytes = repo.find_blob(*blob).map_err(git)?.content().to_vec();
            skeleton.insert_file(path, bytes);
            ignore_files.push(format!("{path}={blob}"));
        } else {
            skeleton.insert_file(path, Vec::new());
        }
    }
    for (path, target) in &listing.symlinks {
        skeleton.insert_symlink(path, target);
    }
    let ignore = FleetIgnore::from_tree(&skeleton);
    let units = flotilla_bundle::plan_dirs(&skeleton, input.paths, &ignore)?;

    let common = {
        let mut h = Sha256::new();
        h.update(input.repo_name.as_bytes());
        h.update(b"\0");
        h.update(serde_json::to_vec(input.targets).unwrap_or_default());
        h.update(format!(
            "\0{}\0{}\0",
            input.limits.max_manifest_bytes, input.limits.max_bundle_bytes
        ));
        for f in &ignore_files {
            h.update(f.as_bytes());
            h.update(b"\0");
        }
        h.finalize()
    };

    let mut next = CompileCache::default();
    let mut bundles = Vec::new();
    let mut compiled = Vec::new();
    let mut reused = 0;
    let mut warnings = Vec::new();
    for unit in &units {
        let has_symlink = listing.symlinks.keys().any(|p| under(p, &unit.dir));
        let mut h = Sha256::new();
        h.update(common);
        h.update(unit.dir.as_bytes());
        h.update(b"\0");
        let tree = listing
            .dirs
            .get(&unit.dir)
            .copied()
            .unwrap_or(Oid::ZERO_SHA1);
        h.update(tree.as_bytes());
        if has_symlink {
            h.update(listing.root.unwrap_or(Oid::ZERO_SHA1).as_bytes());
        }
        for n in &unit.nested {
            h.update(n.as_bytes());
            h.update(b"\0");
        }
        let key = hex::encode(h.finalize());

        let result = match cache.entries.get(&key) {
            Some(hit) => {
                reused += 1;
                hit.clone()
            }
            None => {
                let tree =
                    load(repo, &listing, &unit.dir, &unit.nested, has_symlink).map_err(git)?;
                let nested: Vec<&str> = unit.nested.iter().map(String::as_str).collect();
                compiled.push(unit.dir.clone());
                flotilla_bundle::compile::compile_dir(&tree, &unit.dir, &nested, &ignore, input)?
                    .map(Arc::new)
            }
        };
        if let Some(b) = &result {
            warnings.extend(b.warnings.iter().cloned());
            bundles.push(Arc::clone(b));
        }
        next.entries.insert(key, result);
    }
    flotilla_bundle::check_unique_names(bundles.iter().map(|b| (b.name.as_str(), b.dir.as_str())))?;
    warnings.extend(
        listing
            .skipped
            .iter()
            .map(|p| format!("{p}: submodules are not followed")),
    );
    Ok(CompiledCommit {
        bundles,
        compiled,
        reused,
        cache: next,
        warnings,
    })
}

fn is_ignore_file(path: &str) -> bool {
    path == IGNORE_FILE || path.ends_with(&format!("/{IGNORE_FILE}"))
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The tree one directory's compile needs: its own files (not those of
/// nested bundles) with their bytes, the `.fleetignore` files, and, when
/// symlinks are involved, every file, since a link may point anywhere in
/// the repository.
fn load(
    repo: &Repository,
    listing: &Listing,
    dir: &str,
    nested: &[String],
    everything: bool,
) -> Result<RepoTree, git2::Error> {
    let mut tree = RepoTree::new();
    for (path, blob) in &listing.files {
        let wanted = everything
            || (under(path, dir) && !nested.iter().any(|n| under(path, n)))
            || is_ignore_file(path);
        if wanted {
            tree.insert_file(path, repo.find_blob(*blob)?.content().to_vec());
        }
    }
    for (path, target) in &listing.symlinks {
        tree.insert_symlink(path, target);
    }
    Ok(tree)
}
