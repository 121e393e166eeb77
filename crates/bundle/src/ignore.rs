//! `.fleetignore`: gitignore syntax, applying to its directory and below.
//!
//! - blank lines and `#` comments are skipped; `\#` and `\!` escape;
//! - `!pattern` re-includes what an earlier pattern excluded;
//! - a trailing `/` matches directories only;
//! - a pattern with a `/` elsewhere is anchored to the file's directory,
//!   otherwise it matches a name at any depth;
//! - `*`, `?`, `[...]` stay within one path segment, `**` spans segments;
//! - the last matching pattern wins, and nothing inside an excluded
//!   directory can be re-included (as in git).

use crate::tree::{RepoTree, parent};

#[derive(Clone, Debug)]
struct Pattern {
    glob: String,
    negated: bool,
    dir_only: bool,
    anchored: bool,
}

/// The patterns of one `.fleetignore`, relative to its directory.
#[derive(Clone, Debug)]
struct IgnoreFile {
    dir: String,
    patterns: Vec<Pattern>,
}

/// Every `.fleetignore` of a tree.
#[derive(Clone, Debug, Default)]
pub struct FleetIgnore {
    files: Vec<IgnoreFile>,
}

pub const FILE_NAME: &str = ".fleetignore";

impl FleetIgnore {
    pub fn from_tree(tree: &RepoTree) -> Self {
        let files = tree
            .paths()
            .filter(|p| *p == FILE_NAME || p.ends_with(&format!("/{FILE_NAME}")))
            .filter_map(|p| {
                let text = tree.read(p).ok().flatten()?;
                Some(IgnoreFile {
                    dir: parent(p).to_owned(),
                    patterns: parse(&String::from_utf8_lossy(text)),
                })
            })
            .collect();
        FleetIgnore { files }
    }

    /// Whether a file (or, with `is_dir`, a directory) is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        if self.files.is_empty() {
            return false;
        }
        // An excluded ancestor directory excludes everything below it.
        let mut ancestor = String::new();
        let segments: Vec<&str> = path.split('/').collect();
        for seg in &segments[..segments.len() - 1] {
            if !ancestor.is_empty() {
                ancestor.push('/');
            }
            ancestor.push_str(seg);
            if self.decide(&ancestor, true) {
                return true;
            }
        }
        self.decide(path, is_dir)
    }

    fn decide(&self, path: &str, is_dir: bool) -> bool {
        let mut ignored = false;
        for file in &self.files {
            let rel = if file.dir.is_empty() {
                path
            } else if let Some(rest) = path
                .strip_prefix(&file.dir)
                .and_then(|r| r.strip_prefix('/'))
            {
                rest
            } else {
                continue;
            };
            for p in &file.patterns {
                if p.dir_only && !is_dir {
                    continue;
                }
                let hit = if p.anchored {
                    glob_match(&p.glob, rel)
                } else {
                    glob_match(&p.glob, rel.rsplit('/').next().unwrap_or(rel))
                };
                if hit {
                    ignored = !p.negated;
                }
            }
        }
        ignored
    }
}

fn parse(text: &str) -> Vec<Pattern> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (negated, line) = match line.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, line.strip_prefix('\\').unwrap_or(line)),
            };
            let (dir_only, line) = match line.strip_suffix('/') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let anchored = line.contains('/');
            let glob = line.trim_start_matches('/').to_owned();
            (!glob.is_empty()).then_some(Pattern {
                glob,
                negated,
                dir_only,
                anchored,
            })
        })
        .collect()
}

/// Gitignore-style glob: `**` spans `/`, the other wildcards do not.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                // `**/` also matches zero directories.
                let rest = if p.get(2) == Some(&b'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=t.len())
                    .any(|i| (i == 0 || t[i - 1] == b'/' || rest.is_empty()) && go(rest, &t[i..]))
                    || go(&p[2..], t)
            }
            Some(b'*') => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(&p[1..], &t[i..])),
            Some(b'?') => t.first().is_some_and(|&c| c != b'/') && go(&p[1..], &t[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                    return t.first() == Some(&b'[') && go(&p[1..], &t[1..]);
                };
                let Some(&c) = t.first() else { return false };
                let mut class = &p[1..end];
                let negate = matches!(class.first(), Some(b'!') | Some(b'^'));
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                c != b'/' && hit != negate && go(&p[end + 1..], &t[1..])
            }
            Some(b'\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&p[2..], &t[1..]),
            Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let rows = [
            ("*.yaml", "a.yaml", true),
            ("*.yaml", "dir/a.yaml", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("**/x.yaml", "x.yaml", true),
            ("**/x.yaml", "a/b/x.yaml", true),
            ("docs/**", "docs/a/b.md", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("[abc].txt", "b.txt", true),
            ("[!abc].txt", "b.txt", false),
            ("[a-c]x", "cx", true),
            ("\\*lit", "*lit", true),
        ];
        for (p, t, want) in rows {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    fn tree(ignores: &[(&str, &str)]) -> FleetIgnore {
        let mut t = RepoTree::new();
        for (path, text) in ignores {
            t.insert_file(path, *text);
        }
        FleetIgnore::from_tree(&t)
    }

    #[test]
    fn fleetignore_table() {
        let ig = tree(&[
            (
                ".fleetignore",
                "# comment\n*.md\nsecret.yaml\n/top-only.yaml\nbuild/\n!keep.md\n",
            ),
            ("app/.fleetignore", "local/*.yaml\n"),
        ]);
        let rows = [
            ("README.md", false, true),
            ("app/docs/guide.md", false, true),
            ("keep.md", false, false),
            ("app/secret.yaml", false, true),
            ("top-only.yaml", false, true),
            ("app/top-only.yaml", false, false),
            ("build/out.yaml", false, true),
            ("app/build/out.yaml", false, true),
            ("build", false, false),
            ("app/local/x.yaml", false, true),
            ("local/x.yaml", false, false),
            ("app/deploy.yaml", false, false),
        ];
        for (path, is_dir, want) in rows {
            assert_eq!(ig.is_ignored(path, is_dir), want, "{path}");
        }
    }

    #[test]
    fn excluded_directory_cannot_be_reincluded() {
        let ig = tree(&[(".fleetignore", "vendor/\n!vendor/keep.yaml\n")]);
        assert!(ig.is_ignored("vendor/keep.yaml", false));
    }
}
