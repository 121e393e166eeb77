//! The demo repository of `flotilla dev`: the files of `testdata/demo`,
//! built into the binary, written to a fresh git repository that the user
//! can edit and commit to.

use anyhow::Context as _;
use std::path::Path;

/// Every file of `testdata/demo`, by path relative to it. A test checks
/// that this list and the directory agree.
pub const FILES: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../testdata/demo/README.md"),
    ),
    (
        "config/fleet.yaml",
        include_str!("../../../testdata/demo/config/fleet.yaml"),
    ),
    (
        "config/settings.yaml",
        include_str!("../../../testdata/demo/config/settings.yaml"),
    ),
    (
        "config/overlays/prod/settings_patch.yaml",
        include_str!("../../../testdata/demo/config/overlays/prod/settings_patch.yaml"),
    ),
    (
        "web/fleet.yaml",
        include_str!("../../../testdata/demo/web/fleet.yaml"),
    ),
    (
        "web/deployment.yaml",
        include_str!("../../../testdata/demo/web/deployment.yaml"),
    ),
    (
        "web/service.yaml",
        include_str!("../../../testdata/demo/web/service.yaml"),
    ),
    (
        "web/overlays/prod/deployment_patch.yaml",
        include_str!("../../../testdata/demo/web/overlays/prod/deployment_patch.yaml"),
    ),
    (
        "guestbook/fleet.yaml",
        include_str!("../../../testdata/demo/guestbook/fleet.yaml"),
    ),
    (
        "monitoring/fleet.yaml",
        include_str!("../../../testdata/demo/monitoring/fleet.yaml"),
    ),
    (
        "monitoring/node-exporter.yaml",
        include_str!("../../../testdata/demo/monitoring/node-exporter.yaml"),
    ),
];

/// The branch the demo repository starts on.
pub const BRANCH: &str = "main";

/// What stands for the demo chart repository's URL in [`FILES`].
pub const CHARTS_PLACEHOLDER: &str = "${FLOTILLA_DEMO_CHARTS}";

/// Creates a repository at `dir` holding [`FILES`] (the demo chart
/// repository's URL, `charts`, written in) in one commit on [`BRANCH`],
/// unless `dir` already is a repository (kept as the user left it).
/// Returns whether it was created.
pub fn init(dir: &Path, charts: &str) -> anyhow::Result<bool> {
    if git2::Repository::open(dir).is_ok() {
        return Ok(false);
    }
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head(BRANCH);
    let repo = git2::Repository::init_opts(dir, &opts)
        .with_context(|| format!("creating the demo repository in {}", dir.display()))?;
    for (rel, contents) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents.replace(CHARTS_PLACEHOLDER, charts))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // `git commit` in the demo repository should work on a machine whose
    // git knows no user yet.
    let has_identity = git2::Config::open_default()
        .and_then(|c| c.get_string("user.name"))
        .is_ok();
    if !has_identity {
        let mut config = repo.config()?;
        config.set_str("user.name", "Flotilla Dev")?;
        config.set_str("user.email", "dev@flotilla.invalid")?;
    }
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("Flotilla Dev", "dev@flotilla.invalid")?;
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "The flotilla dev demo",
        &tree,
        &[],
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn the_built_in_files_are_exactly_testdata_demo() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/demo");
        let mut on_disk = BTreeSet::new();
        walk(&root, &root, &mut on_disk);
        let built_in: BTreeSet<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(built_in, on_disk, "update demo::FILES");
        for (rel, contents) in FILES {
            assert_eq!(
                std::fs::read_to_string(root.join(rel)).unwrap(),
                *contents,
                "{rel}"
            );
        }
    }

    #[test]
    fn init_commits_once_and_keeps_an_existing_repository() {
        let dir = std::env::temp_dir().join(format!("flotilla-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(init(&dir, "http://127.0.0.1:1").unwrap());
        let repo = git2::Repository::open(&dir).unwrap();
        let head = repo.head().unwrap();
        assert_eq!(head.shorthand().ok(), Some(BRANCH));
        let tree = head.peel_to_tree().unwrap();
        assert!(tree.get_path(Path::new("web/deployment.yaml")).is_ok());
        let guestbook = std::fs::read_to_string(dir.join("guestbook/fleet.yaml")).unwrap();
        assert!(
            guestbook.contains("repo: http://127.0.0.1:1\n"),
            "{guestbook}"
        );
        let first = head.target().unwrap();
        // A user's edit survives a restart.
        std::fs::write(dir.join("web/service.yaml"), "edited").unwrap();
        assert!(!init(&dir, "http://127.0.0.1:2").unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("web/service.yaml")).unwrap(),
            "edited"
        );
        assert_eq!(repo.head().unwrap().target().unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
