//! Test fixtures (feature `testing`): local repositories built with git2,
//! and a smart-HTTP git server with basic auth on 127.0.0.1.

use git2::{IndexAddOption, Oid, Repository, RepositoryInitOptions, Signature};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A repository with a work tree, committed to with git2.
pub struct TestRepo {
    pub path: PathBuf,
    repo: Repository,
}

impl TestRepo {
    /// A new repository at `path` whose first branch is `branch`.
    pub fn init(path: &Path, branch: &str) -> Self {
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head(branch);
        let repo = Repository::init_opts(path, &opts).expect("git init");
        TestRepo {
            path: path.to_owned(),
            repo,
        }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    pub fn write(&self, rel: &str, contents: &str) -> &Self {
        let p = self.path.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, contents).expect("write");
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        let p = self.path.join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).expect("rm -r");
        } else {
            std::fs::remove_file(p).expect("rm");
        }
        self
    }

    /// Commits the whole work tree on the current branch.
    pub fn commit(&self, message: &str) -> Oid {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree = self
            .repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let sig = Signature::now("Flotilla Test", "test@flotilla.dev").expect("sig");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit")
    }

    /// An annotated tag on HEAD.
    pub fn tag(&self, name: &str) -> Oid {
        let head = self
            .repo
            .head()
            .expect("head")
            .peel(git2::ObjectType::Commit)
            .expect("commit");
        let sig = Signature::now("Flotilla Test", "test@flotilla.dev").expect("sig");
        self.repo.tag(name, &head, &sig, name, false).expect("tag");
        head.id()
    }
}

/// `git http-backend` behind basic auth (testdata/git-http/serve.py),
/// serving every repository under a root. Killed on drop.
pub struct HttpGitServer {
    child: Child,
    pub port: u16,
}

impl HttpGitServer {
    pub fn start(root: &Path, user: &str, password: &str) -> Self {
        Self::start_on(root, user, password, 0)
    }

    /// On a given port (0: a free one), e.g. to restart a server with
    /// other credentials at the same URL.
    pub fn start_on(root: &Path, user: &str, password: &str, port: u16) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/git-http/serve.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(user)
            .arg(password)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 serve.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().expect("a port");
        HttpGitServer { child, port }
    }

    /// The URL of repository `name` under the root.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
