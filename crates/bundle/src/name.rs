//! Bundle names, following Fleet: the GitRepo name and the bundle's path,
//! made a DNS-1123 name, cut with a hash suffix when too long. Names depend
//! only on the repo name and the path, so they stay stable across commits.

use crate::content::sha256_hex;

/// Room for the name in a label value (63) and in derived names.
pub const MAX_BUNDLE_NAME: usize = 53;

pub fn bundle_name(repo: &str, path: &str) -> String {
    let raw = if path.is_empty() {
        repo.to_owned()
    } else {
        format!("{repo}-{path}")
    };
    let mut name = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    let name = name.trim_matches('-').to_owned();
    let name = if name.is_empty() {
        "bundle".to_owned()
    } else {
        name
    };
    if name.len() <= MAX_BUNDLE_NAME {
        return name;
    }
    let suffix = &sha256_hex(raw.as_bytes())[..5];
    let head = name[..MAX_BUNDLE_NAME - 6].trim_end_matches('-');
    format!("{head}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetyaml::is_dns1123_label;

    #[test]
    fn naming_table() {
        let rows = [
            ("shop", "", "shop"),
            ("shop", "apps/web", "shop-apps-web"),
            ("Shop", "Apps/Web_Frontend", "shop-apps-web-frontend"),
            ("shop", "a//b/", "shop-a-b"),
            ("shop", "charts/redis.v2", "shop-charts-redis-v2"),
        ];
        for (repo, path, want) in rows {
            assert_eq!(bundle_name(repo, path), want, "{repo} {path}");
        }
    }

    #[test]
    fn long_names_get_a_stable_hash_suffix() {
        let path = "very/deeply/nested/directory/structure/for/a/bundle/that/is/long";
        let a = bundle_name("platform-infrastructure", path);
        assert!(a.len() <= MAX_BUNDLE_NAME, "{a}");
        assert!(is_dns1123_label(&a), "{a}");
        assert_eq!(a, bundle_name("platform-infrastructure", path), "stable");
        let b = bundle_name("platform-infrastructure", &format!("{path}2"));
        assert_ne!(a, b, "different paths stay distinct after cutting");
    }
}
