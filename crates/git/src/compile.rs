//! A commit becomes bundles, recompiling only the bundle directories whose
//! git tree changed.
//!
//! 1. List the commit's tree: paths, blob ids and sizes (from the object
//!    headers) and every directory's tree id. No file is read yet, except
//!    symlink targets.
//! 2. Plan the bundle directories from the paths alone
//!    ([`flotilla_bundle::plan_dirs`]).
//! 3. For each directory, a cache key from its tree id and everything else
//!    its compile depends on. A hit reuses the compiled bundle; a miss
//!    compiles it, reading only the files it takes (never an ignored one,
//!    and none before its size was checked against the limits).
//!
//! A directory whose subtree holds a symlink may read files outside itself,
//! so its key also carries the root tree id.

use flotilla_bundle::ignore::FleetIgnore;
use flotilla_bundle::{BlobSource, BundleError, CompileInput, CompiledBundle, RepoTree};
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    /// What was left out and why: submodules, names that are not UTF-8.
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
            // Skipped as `plan` skips it, and said so (a directory is
            // skipped whole).
            let name = String::from_utf8_lossy(entry.name_bytes());
            listing
                .skipped
                .push(format!("{dir}{name}: the name is not UTF-8; skipped"));
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
            _ => listing
                .skipped
                .push(format!("{path}: submodules are not followed")),
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

/// Reads blobs of a repository on demand, by hex id. The repository is
/// opened again for this thread (a `git2::Repository` is not `Sync`).
struct OdbBlobs {
    repo: std::sync::Mutex<Repository>,
}

impl BlobSource for OdbBlobs {
    fn read_blob(&self, id: &str) -> Result<Vec<u8>, String> {
        let oid = Oid::from_str(id).map_err(|e| e.message().to_owned())?;
        let repo = self
            .repo
            .lock()
            .map_err(|_| "repository lock poisoned".to_owned())?;
        repo.find_blob(oid)
            .map(|b| b.content().to_vec())
            .map_err(|e| e.message().to_owned())
    }
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

    // Every path with its size (from the object headers); bytes are read
    // only when the compile needs them, after their size was checked.
    let odb = repo.odb().map_err(git)?;
    let blobs = OdbBlobs {
        repo: std::sync::Mutex::new(Repository::open_bare(repo.path()).map_err(git)?),
    };
    let mut tree = RepoTree::with_source(Arc::new(blobs));
    let mut ignore_files = Vec::new();
    for (path, blob) in &listing.files {
        let (size, _) = odb.read_header(*blob).map_err(git)?;
        tree.insert_blob(path, size as u64, blob.to_string());
        if is_ignore_file(path) {
            ignore_files.push(format!("{path}={blob}"));
        }
    }
    for (path, target) in &listing.symlinks {
        tree.insert_symlink(path, target);
    }
    let ignore = FleetIgnore::from_tree(&tree)?;
    let units = flotilla_bundle::plan_dirs(&tree, input.paths, &ignore)?;

    let common = {
        let mut h = Sha256::new();
        h.update(input.repo_name.as_bytes());
        h.update(b"\0");
        h.update(serde_json::to_vec(input.targets).unwrap_or_default());
        h.update(format!(
            "\0{}\0{}\0{}\0",
            input.limits.max_manifest_bytes,
            input.limits.max_bundle_bytes,
            input.limits.max_object_bytes
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
        // A directory whose subtree holds a symlink may read files outside
        // itself, so its key carries the root tree id too.
        let has_symlink = listing.symlinks.keys().any(|p| under(p, &unit.dir));
        let mut h = Sha256::new();
        h.update(common);
        h.update(unit.dir.as_bytes());
        h.update(b"\0");
        let dir_tree = listing
            .dirs
            .get(&unit.dir)
            .copied()
            .unwrap_or(Oid::ZERO_SHA1);
        h.update(dir_tree.as_bytes());
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
    warnings.extend(listing.skipped.iter().cloned());
    Ok(CompiledCommit {
        bundles,
        compiled,
        reused,
        cache: next,
        warnings,
    })
}

fn is_ignore_file(path: &str) -> bool {
    flotilla_bundle::ignore::is_ignore_file(path)
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}
