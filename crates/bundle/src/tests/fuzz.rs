//! Fuzzing by proptest (cargo-fuzz needs a nightly toolchain these
//! machines do not have): `fleet.yaml` parsing and `.fleetignore` matching
//! on arbitrary input never panic, and matching stays within its bound.
//! CI runs a few hundred cases each; `FLOTILLA_FUZZ_CASES=100000 cargo
//! test -p flotilla-bundle fuzz` runs longer by hand.

use crate::fleetyaml;
use crate::ignore::{FleetIgnore, glob_match};
use crate::tree::RepoTree;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("FLOTILLA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that looks like YAML often enough to reach deep into the parser:
/// keys from fleet.yaml, flow and block collections, anchors and aliases,
/// odd scalars.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("helm:".to_owned()),
        Just("  chart: ".to_owned()),
        Just("releaseName: ".to_owned()),
        Just("targetCustomizations:".to_owned()),
        Just("- name: x".to_owned()),
        Just("  clusterSelector: {matchLabels: {a: b}}".to_owned()),
        Just("values: &a {x: [1, 2, *a]}".to_owned()),
        Just("<<: *a".to_owned()),
        Just("  - ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(": ".to_owned()),
        Just("\n".to_owned()),
        Just("---\n".to_owned()),
        Just("!!binary ".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        Just("~".to_owned()),
        Just("1e999".to_owned()),
        "[a-zA-Z0-9 ._-]{0,12}",
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fleet_yaml_parsing_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = fleetyaml::parse("fleet.yaml", &text);
    }

    #[test]
    fn fleet_yaml_parsing_never_panics_on_yamlish_text(text in yamlish()) {
        if let Err(e) = fleetyaml::parse("fleet.yaml", &text) {
            // Every error names the file.
            prop_assert!(e.to_string().starts_with("fleet.yaml"), "{}", e);
        }
    }

    #[test]
    fn fleetignore_matching_never_panics(
        patterns in prop::collection::vec("[a-c*?\\[\\]!/\\\\{},.#-]{0,12}", 0..12),
        paths in prop::collection::vec("[a-c./*]{1,30}", 1..8),
    ) {
        let mut tree = RepoTree::new();
        tree.insert_file(".fleetignore", patterns.join("\n"));
        let ignore = FleetIgnore::from_tree(&tree).unwrap();
        for p in &paths {
            let _ = ignore.is_ignored(p, false);
            let _ = ignore.is_ignored(p, true);
        }
        let segments: u64 = paths.iter().map(|p| p.split('/').count() as u64).sum();
        prop_assert!(ignore.evaluations() <= 2 * ignore.patterns() as u64 * segments);
        for pat in &patterns {
            for p in &paths {
                let _ = glob_match(pat, p);
            }
        }
    }
}
