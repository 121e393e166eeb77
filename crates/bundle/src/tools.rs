//! The two subprocess adapters' plumbing: locating `kubectl` and `helm`,
//! writing bundle content to a scratch directory, and running a command with
//! a timeout whose stderr ends up in the error.

use crate::content::BundleContent;
use crate::error::{BundleError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the external renderers are and how long they may take.
#[derive(Clone, Debug)]
pub struct Tools {
    pub kubectl: PathBuf,
    /// `None` when no `helm` is on PATH: Helm bundles then fail clearly.
    pub helm: Option<PathBuf>,
    pub timeout: Duration,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            kubectl: find_on_path("kubectl").unwrap_or_else(|| PathBuf::from("kubectl")),
            helm: find_on_path("helm"),
            timeout: Duration::from_secs(60),
        }
    }
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A scratch directory holding one bundle's files, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn write(content: &BundleContent) -> Result<Scratch> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flotilla-render-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |e: std::io::Error| BundleError::Tool {
            tool: "scratch directory".into(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let scratch = Scratch { dir };
        for (rel, bytes) in &content.files {
            // Paths were normalized inside the repository when compiled;
            // refuse anything else rather than write outside the scratch dir.
            if rel.split('/').any(|s| s == ".." || s.is_empty()) || rel.starts_with('/') {
                return Err(BundleError::PathEscapes {
                    path: rel.clone(),
                    why: "content path is not relative".into(),
                });
            }
            let path = scratch.dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, bytes).map_err(io)?;
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command, returning stdout. A non-zero exit, a timeout or a spawn
/// failure is an error carrying stderr.
pub fn run(tool: &str, program: &Path, args: &[String], timeout: Duration) -> Result<String> {
    let err = |message: String| BundleError::Tool {
        tool: tool.to_owned(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {}: {e}", program.display())))?;
    // Drain both pipes on threads so a chatty tool cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|e| err(e.to_string()))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("timed out after {}s", timeout.as_secs_f64())));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let stdout = out
        .join()
        .map_err(|_| err("stdout reader panicked".into()))?
        .map_err(|e| err(format!("output is not UTF-8: {e}")))?;
    let stderr = errs.join().unwrap_or_default();
    if !status.success() {
        return Err(err(format!("{status}: {}", stderr.trim())));
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_reaches_the_error_and_timeouts_kill() {
        let sh = PathBuf::from("/bin/sh");
        let ok = run(
            "sh",
            &sh,
            &["-c".into(), "echo hi".into()],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(ok, "hi\n");
        let e = run(
            "sh",
            &sh,
            &["-c".into(), "echo boom >&2; exit 3".into()],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        let e = run(
            "sh",
            &sh,
            &["-c".into(), "sleep 5".into()],
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        let e = run(
            "nope",
            Path::new("/nonexistent/tool"),
            &[],
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot run"), "{e}");
    }

    #[test]
    fn scratch_writes_files_and_cleans_up() {
        let mut c = BundleContent::default();
        c.files.insert("a/b.yaml".into(), b"x: 1".to_vec());
        let dir = {
            let s = Scratch::write(&c).unwrap();
            assert_eq!(std::fs::read(s.dir.join("a/b.yaml")).unwrap(), b"x: 1");
            s.dir.clone()
        };
        assert!(!dir.exists());
        c.files.insert("../escape".into(), vec![]);
        assert!(Scratch::write(&c).is_err());
    }
}
