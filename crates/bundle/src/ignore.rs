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
//!
//! Globs are compiled by `globset` into regular expressions, so matching
//! is linear in the length of the path whatever the pattern: a hostile
//! `*a*a*a*a*a*b` cannot stall a compile. A line that is not a valid glob
//! (an unclosed `[`) matches itself literally.

use crate::tree::{RepoTree, parent};
use std::sync::atomic::{AtomicU64, Ordering};

/// A compiled gitignore-style glob: `**` spans `/`, the other wildcards do
/// not; `{` and `}` are literal (gitignore has no alternates).
#[derive(Clone, Debug)]
pub struct Glob {
    matcher: globset::GlobMatcher,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        globset::GlobBuilder::new(&literal_braces(pattern))
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map(|g| Glob {
                matcher: g.compile_matcher(),
            })
            .map_err(|e| format!("{pattern:?} is not a valid glob: {}", e.kind()))
    }

    /// A glob that matches exactly `text`.
    pub fn literal(text: &str) -> Glob {
        let glob = globset::GlobBuilder::new(&globset::escape(text))
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .expect("an escaped literal is a valid glob");
        Glob {
            matcher: glob.compile_matcher(),
        }
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.matcher.is_match(text)
    }
}

/// Escapes `{` and `}` outside character classes.
fn literal_braces(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` right after `[` or `[!` is a member, not the end.
                if matches!(chars.peek(), Some('!') | Some('^')) {
                    out.push(chars.next().expect("peeked"));
                }
                if chars.peek() == Some(&']') {
                    out.push(chars.next().expect("peeked"));
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' | '}' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether `text` matches the gitignore-style glob `pattern`. An invalid
/// pattern matches nothing.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).is_ok_and(|g| g.is_match(text))
}

#[derive(Clone, Debug)]
struct Pattern {
    glob: Glob,
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
#[derive(Debug, Default)]
pub struct FleetIgnore {
    files: Vec<IgnoreFile>,
    /// Glob evaluations so far; each is linear in the path's length, so
    /// this bounds the work without timing anything.
    evaluations: AtomicU64,
}

impl Clone for FleetIgnore {
    fn clone(&self) -> Self {
        FleetIgnore {
            files: self.files.clone(),
            evaluations: AtomicU64::new(0),
        }
    }
}

pub const FILE_NAME: &str = ".fleetignore";

/// The largest `.fleetignore` read.
pub const MAX_IGNORE_FILE_BYTES: usize = 1 << 20;

impl FleetIgnore {
    /// Reads every `.fleetignore` of the tree (each at most 1 MiB).
    pub fn from_tree(tree: &RepoTree) -> crate::Result<Self> {
        let mut files = Vec::new();
        for p in tree.paths().filter(|p| is_ignore_file(p)) {
            let Some(text) = tree.read_limited(p, MAX_IGNORE_FILE_BYTES)? else {
                continue; // a dangling symlink
            };
            files.push(IgnoreFile {
                dir: parent(p).to_owned(),
                patterns: parse(&String::from_utf8_lossy(&text)),
            });
        }
        Ok(FleetIgnore {
            files,
            evaluations: AtomicU64::new(0),
        })
    }

    /// How many patterns there are, over every file.
    pub fn patterns(&self) -> usize {
        self.files.iter().map(|f| f.patterns.len()).sum()
    }

    /// Glob evaluations made so far.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// Whether a file (or, with `is_dir`, a directory) is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        if self.files.is_empty() {
            return false;
        }
        // An excluded ancestor directory excludes everything below it.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            if self.decide(&path[..end], true) {
                return true;
            }
            end += 1;
        }
        self.decide(path, is_dir)
    }

    fn decide(&self, path: &str, is_dir: bool) -> bool {
        let mut ignored = false;
        let mut evaluations = 0;
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
            let name = rel.rsplit('/').next().unwrap_or(rel);
            for p in &file.patterns {
                if p.dir_only && !is_dir {
                    continue;
                }
                evaluations += 1;
                let hit = p.glob.is_match(if p.anchored { rel } else { name });
                if hit {
                    ignored = !p.negated;
                }
            }
        }
        self.evaluations.fetch_add(evaluations, Ordering::Relaxed);
        ignored
    }
}

pub fn is_ignore_file(path: &str) -> bool {
    path.rsplit('/').next() == Some(FILE_NAME)
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
            let glob = line.trim_start_matches('/');
            if glob.is_empty() {
                return None;
            }
            Some(Pattern {
                glob: Glob::new(glob).unwrap_or_else(|_| Glob::literal(glob)),
                negated,
                dir_only,
                anchored,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            ("\\*lit", "xlit", false),
            ("{a,b}.yaml", "{a,b}.yaml", true),
            ("{a,b}.yaml", "a.yaml", false),
            ("a**b", "axxb", true),
            ("a**b", "a/b", false),
        ];
        for (p, t, want) in rows {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
        assert!(Glob::new("[unclosed").is_err());
        // Found by the fuzz test: a dangling backslash is not a valid glob,
        // and matches itself literally.
        assert!(Glob::literal("!\\").is_match("!\\"));
        assert!(Glob::literal("a\\").is_match("a\\"));
    }

    fn tree(ignores: &[(&str, &str)]) -> FleetIgnore {
        let mut t = RepoTree::new();
        for (path, text) in ignores {
            t.insert_file(path, *text);
        }
        FleetIgnore::from_tree(&t).unwrap()
    }

    #[test]
    fn fleetignore_table() {
        let ig = tree(&[
            (
                ".fleetignore",
                "# comment\n*.md\nsecret.yaml\n/top-only.yaml\nbuild/\n!keep.md\n[unclosed\n",
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
            ("[unclosed", false, true),
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

    /// The pattern that kept both cores busy for minutes with a
    /// backtracking matcher: the work is now bounded by the number of
    /// patterns times the number of path segments, each one regex pass.
    #[test]
    fn hostile_patterns_cost_one_linear_pass_per_pattern_and_segment() {
        let hostile = "*a*a*a*a*a*a*a*a*a*a*a*a*b\n**/*a*a*a*a*a*a*a*a*c/**\n";
        let ig = tree(&[(".fleetignore", hostile)]);
        let long = format!("dir/sub/{}", "a".repeat(20_000));
        assert!(!ig.is_ignored(&long, false));
        let segments = long.split('/').count() as u64;
        assert!(
            ig.evaluations() <= ig.patterns() as u64 * segments,
            "{} evaluations for {} patterns and {segments} segments",
            ig.evaluations(),
            ig.patterns()
        );
        assert!(ig.is_ignored(&format!("{}b", "a".repeat(20_000)), false));
    }

    /// A plain backtracking matcher with git's semantics, as the reference
    /// for short inputs: `*`, `?` and classes stay within a segment; `**`
    /// spans segments only as a whole segment, else it is a `*`.
    fn naive(p: &[u8], t: &[u8], seg_start: bool) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if seg_start && p == b"**" => true,
            Some(b'*') if seg_start && p.starts_with(b"**/") => {
                naive(&p[3..], t, true)
                    || (0..t.len()).any(|i| t[i] == b'/' && naive(&p[3..], &t[i + 1..], true))
            }
            Some(b'*') => {
                let stars = p.iter().take_while(|&&c| c == b'*').count();
                (0..=t.len())
                    .take_while(|&i| i == 0 || t[i - 1] != b'/')
                    .any(|i| naive(&p[stars..], &t[i..], false))
            }
            Some(b'?') => t.first().is_some_and(|&c| c != b'/') && naive(&p[1..], &t[1..], false),
            Some(b'[') => {
                let end = p.iter().skip(2).position(|&c| c == b']').map(|i| i + 2);
                let Some(end) = end else { return false };
                let Some(&c) = t.first() else { return false };
                let mut class = &p[1..end];
                let negate = class.first() == Some(&b'!');
                if negate {
                    class = &class[1..];
                }
                let hit = class.contains(&c);
                c != b'/' && hit != negate && naive(&p[end + 1..], &t[1..], false)
            }
            Some(&c) => t.first() == Some(&c) && naive(&p[1..], &t[1..], c == b'/'),
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("*".to_owned()),
                Just("?".to_owned()),
                Just("[ab]".to_owned()),
                Just("[!a]".to_owned()),
            ],
            1..4,
        )
        .prop_map(|parts| parts.concat())
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![3 => segment(), 1 => Just("**".to_owned())],
            1..4,
        )
        .prop_map(|segs| segs.join("/"))
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec("[ab]{1,3}", 1..4).prop_map(|segs| segs.join("/"))
    }

    proptest! {
        #[test]
        fn matches_the_naive_matcher_on_short_inputs(p in pattern(), t in path()) {
            prop_assert_eq!(glob_match(&p, &t), naive(p.as_bytes(), t.as_bytes(), true), "{} vs {}", p, t);
        }
    }
}
