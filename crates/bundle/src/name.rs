//! Bundle names, exactly as Fleet makes them (`names.HelmReleaseName` of
//! the GitRepo name joined to the bundle's path), so that `dependsOn` by
//! name and default release names are the ones Fleet gives the same
//! repository:
//!
//! 1. `/` becomes `-`;
//! 2. if the result has upper case or characters outside `[a-zA-Z0-9-]`,
//!    `-` and the first 8 hex digits of its MD5 are appended;
//! 3. lower case, each run of disallowed characters becomes `-`, runs of
//!    `-` collapse, and `-` is trimmed at both ends;
//! 4. a valid name is cut to 53 characters ([`limit`]: the first 47, `-`
//!    and 5 hex digits of the MD5 of the whole); one that is still not
//!    valid becomes the first 24 hex digits of the MD5 of the original.
//!
//! Names depend only on the repo name and the path, so they stay stable
//! across commits.

use md5::{Digest, Md5};

/// Room for the name in a label value (63) and in derived names.
pub const MAX_BUNDLE_NAME: usize = 53;

/// The first `n` hex digits of the MD5 of `s` (Fleet's `names.Hex`).
fn hex(s: &str, n: usize) -> String {
    let full = hex::encode(Md5::digest(s.as_bytes()));
    full[..n.min(full.len())].to_owned()
}

/// Fleet's `names.Limit`: `s` unchanged when it fits in `count`, else cut
/// with an MD5 suffix.
pub fn limit(s: &str, count: usize) -> String {
    if s.len() <= count {
        return s.to_owned();
    }
    if count <= 6 {
        return s[..count].to_owned();
    }
    let n = count - 6;
    let head = &s[..n];
    if head.ends_with('-') {
        format!("{head}{}", hex(s, 5))
    } else {
        format!("{head}-{}", hex(s, 5))
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// Fleet's `names.HelmReleaseName`.
pub fn helm_release_name(original: &str) -> String {
    let mut s = original.replace('/', "-");
    if s != s.to_lowercase() || !s.chars().all(allowed) {
        s = format!("{s}-{}", hex(&s, 8));
    }
    let lower = s.to_lowercase();
    let mut cleaned = String::with_capacity(lower.len());
    for c in lower.chars() {
        let c = if allowed(c) { c } else { '-' };
        if !(c == '-' && cleaned.ends_with('-')) {
            cleaned.push(c);
        }
    }
    let cleaned = cleaned.trim_matches('-');
    if is_release_name(cleaned) {
        limit(cleaned, MAX_BUNDLE_NAME)
    } else {
        hex(original, 24)
    }
}

/// A DNS label (which also satisfies Helm's release-name rule).
fn is_release_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The name of the bundle at `path` (relative to the repository, "" for
/// its root) of GitRepo `repo`.
pub fn bundle_name(repo: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    let joined = if path.is_empty() || path == "." {
        repo.to_owned()
    } else {
        format!("{repo}/{path}")
    };
    helm_release_name(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetyaml::is_dns1123_label;
    use proptest::prelude::*;

    /// Fleet's own test vectors (internal/names/name_test.go) and names its
    /// code gives for fleet-examples paths.
    #[test]
    fn fleet_naming_vectors() {
        let digits53 = "12345678901234567890123456789012345678901234567890123";
        let rows = [
            (
                format!("{digits53}a"),
                "12345678901234567890123456789012345678901234567-fdba4",
            ),
            (
                "bundle.name.example.com".to_owned(),
                "bundle-name-example-com-645ef821",
            ),
            (
                "long-name-test-0.App_ ".to_owned(),
                "long-name-test-0-app-5bf6b3fb",
            ),
            (
                "helm/single-cluster/helm-multi-chart/rancher-monitoring-crd".to_owned(),
                "helm-single-cluster-helm-multi-chart-rancher-mo-e4e6b",
            ),
            (
                "fleet-examples/multi-cluster/helm-target-customizations".to_owned(),
                "fleet-examples-multi-cluster-helm-target-custom-583fa",
            ),
            ("test/guestbook".to_owned(), "test-guestbook"),
        ];
        for (input, want) in rows {
            assert_eq!(helm_release_name(&input), want, "{input}");
        }
        assert!(
            helm_release_name("long-name-test-shortpath-with@char")
                .ends_with("-with-char-031bab5e")
        );
        assert_eq!(limit("12345678", 7), "1-25d55");
        assert_eq!(limit("1-3456789", 8), "1-9b657");
    }

    #[test]
    fn naming_table() {
        let rows = [
            ("shop", "", "shop"),
            ("shop", "/", "shop"),
            ("shop", "apps/web", "shop-apps-web"),
            ("shop", "a//b/", "shop-a-b"),
        ];
        for (repo, path, want) in rows {
            assert_eq!(bundle_name(repo, path), want, "{repo} {path}");
        }
        // Upper case and dots get Fleet's MD5 suffix.
        let n = bundle_name("Shop", "Apps/Web_Frontend");
        assert!(
            n.starts_with("shop-apps-web-frontend-") && n.len() == 31,
            "{n}"
        );
        let n = bundle_name("shop", "charts/redis.v2");
        assert!(n.starts_with("shop-charts-redis-v2-"), "{n}");
    }

    proptest! {
        #[test]
        fn names_are_valid_stable_labels(repo in "[a-zA-Z0-9._-]{1,30}", path in "[a-zA-Z0-9._/ @-]{0,80}") {
            let a = bundle_name(&repo, &path);
            prop_assert!(a.len() <= MAX_BUNDLE_NAME, "{}", a);
            prop_assert!(is_dns1123_label(&a), "{}", a);
            prop_assert_eq!(a, bundle_name(&repo, &path));
        }
    }
}
