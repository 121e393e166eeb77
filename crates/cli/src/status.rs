//! `flotilla status`: per cluster, what is deployed and whether it is
//! healthy, read from the BundleDeployments on the management cluster.
//! Non-ready rows come first, worst state first.

use flotilla_api::{BundleDeployment, BundleState, GitRepo, keys};
use kube::api::{Api, ListParams};
use serde::Serialize;
use std::fmt::Write as _;

/// One bundle on one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub cluster: String,
    /// The Cluster's namespace (its workspace).
    pub workspace: String,
    pub bundle: String,
    pub gitrepo: String,
    pub state: String,
    pub ready: bool,
    pub message: String,
    #[serde(rename = "deploymentID")]
    pub deployment_id: String,
    #[serde(rename = "appliedDeploymentID")]
    pub applied_deployment_id: String,
}

/// The GitRepo a report is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoSummary {
    pub namespace: String,
    pub name: String,
    pub commit: String,
    /// `ready/desired` clusters.
    pub ready_clusters: String,
    /// Conditions that are not as they should be (Ready not True, Stalled
    /// or Reconciling True), as `Type: message`.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitrepo: Option<RepoSummary>,
    pub items: Vec<Row>,
}

/// What to report on.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The workspace; None: every namespace.
    pub namespace: Option<String>,
    /// Only this GitRepo's bundles.
    pub gitrepo: Option<String>,
}

/// One row per BundleDeployment (deleted ones left out), non-ready first.
pub fn rows(bds: &[BundleDeployment]) -> Vec<Row> {
    let mut rows: Vec<(BundleState, Row)> = bds
        .iter()
        .filter(|bd| bd.metadata.deletion_timestamp.is_none())
        .map(|bd| {
            let labels = bd.metadata.labels.clone().unwrap_or_default();
            let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let state = bd.state();
            let status = bd.status.clone().unwrap_or_default();
            let row = Row {
                cluster: label(keys::CLUSTER_NAME),
                workspace: label(keys::CLUSTER_NAMESPACE),
                bundle: label(keys::BUNDLE_NAME),
                gitrepo: label(keys::REPO_NAME),
                state: state.as_str().to_owned(),
                ready: state == BundleState::Ready,
                message: if state == BundleState::Ready {
                    String::new()
                } else {
                    bd.state_message()
                },
                deployment_id: bd.spec.deployment_id.clone(),
                applied_deployment_id: status.applied_deployment_id,
            };
            (state, row)
        })
        .collect();
    rows.sort_by(|(sa, a), (sb, b)| {
        sb.rank().cmp(&sa.rank()).then_with(|| {
            (&a.workspace, &a.cluster, &a.bundle).cmp(&(&b.workspace, &b.cluster, &b.bundle))
        })
    });
    rows.into_iter().map(|(_, r)| r).collect()
}

/// The GitRepo's headline: commit, clusters ready, what is wrong.
pub fn summarize(repo: &GitRepo) -> RepoSummary {
    let status = repo.status.clone().unwrap_or_default();
    // Stalled or Reconciling says most; Ready only what they do not.
    use flotilla_api::condition::{READY, RECONCILING, STALLED};
    let mut problems: Vec<String> = Vec::new();
    let mut said: Vec<&str> = Vec::new();
    for (type_, bad_when) in [(STALLED, true), (RECONCILING, true), (READY, false)] {
        for c in status.conditions.iter().filter(|c| c.type_ == type_) {
            let bad = (c.status == "True") == bad_when;
            if bad && !c.message.is_empty() && !said.contains(&c.message.as_str()) {
                problems.push(format!("{}: {}", c.type_, c.message));
                said.push(&c.message);
            }
        }
    }
    // The conditions carry the first problem; the display message all of
    // them (the status controller joins them with "; ").
    let named: Vec<String> = problems.clone();
    for rest in status.display.message.split("; ").filter(|m| !m.is_empty()) {
        if !named.iter().any(|p| p.ends_with(rest)) {
            problems.push(format!("Also: {rest}"));
        }
    }
    RepoSummary {
        namespace: repo.metadata.namespace.clone().unwrap_or_default(),
        name: repo.metadata.name.clone().unwrap_or_default(),
        commit: status.commit.unwrap_or_default(),
        ready_clusters: format!(
            "{}/{}",
            status.ready_clusters, status.desired_ready_clusters
        ),
        problems,
    }
}

/// Reads the report from the management cluster.
pub async fn fetch(client: &kube::Client, sel: &Selection) -> anyhow::Result<Report> {
    let mut labels = Vec::new();
    let mut gitrepo = None;
    if let Some(name) = &sel.gitrepo {
        let ns = sel
            .namespace
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("gitrepo {name}: name its namespace"))?;
        let repos: Api<GitRepo> = Api::namespaced(client.clone(), ns);
        let repo = repos
            .get_opt(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("gitrepo {ns}/{name} not found"))?;
        gitrepo = Some(summarize(&repo));
        labels.push(format!("{}={name}", keys::REPO_NAME));
    }
    if let Some(ns) = &sel.namespace {
        labels.push(format!("{}={ns}", keys::BUNDLE_NAMESPACE));
    }
    let bds: Api<BundleDeployment> = Api::all(client.clone());
    let list = bds
        .list(&ListParams::default().labels(&labels.join(",")))
        .await?;
    Ok(Report {
        gitrepo,
        items: rows(&list.items),
    })
}

/// The report as a table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    if let Some(r) = &report.gitrepo {
        let commit = if r.commit.is_empty() {
            "(none yet)"
        } else {
            &r.commit[..r.commit.len().min(12)]
        };
        let _ = writeln!(
            out,
            "GitRepo {}/{}: commit {commit}, clusters ready {}",
            r.namespace, r.name, r.ready_clusters
        );
        for p in &r.problems {
            let _ = writeln!(out, "  {p}");
        }
        out.push('\n');
    }
    if report.items.is_empty() {
        out.push_str("No bundle deployments.\n");
        return out;
    }
    let header = ["CLUSTER", "BUNDLE", "STATE", "READY", "MESSAGE"];
    let cells: Vec<[String; 5]> = report
        .items
        .iter()
        .map(|r| {
            [
                r.cluster.clone(),
                r.bundle.clone(),
                r.state.clone(),
                if r.ready { "yes" } else { "no" }.to_owned(),
                r.message.replace('\n', " "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cols: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == cols.len() - 1 {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &cells {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::{BundleDeploymentDisplay, BundleDeploymentSpec, BundleDeploymentStatus};
    use std::collections::BTreeMap;

    fn bd(
        cluster: &str,
        bundle: &str,
        applied: &str,
        ready: bool,
        message: &str,
    ) -> BundleDeployment {
        let mut bd = BundleDeployment::new(
            &format!("{bundle}-{cluster}"),
            BundleDeploymentSpec {
                deployment_id: "s-a:b".into(),
                ..Default::default()
            },
        );
        bd.metadata.labels = Some(BTreeMap::from([
            (keys::CLUSTER_NAME.to_owned(), cluster.to_owned()),
            (
                keys::CLUSTER_NAMESPACE.to_owned(),
                "fleet-default".to_owned(),
            ),
            (keys::BUNDLE_NAME.to_owned(), bundle.to_owned()),
            (keys::REPO_NAME.to_owned(), "demo".to_owned()),
        ]));
        bd.status = Some(BundleDeploymentStatus {
            applied_deployment_id: applied.into(),
            ready,
            non_modified: true,
            display: BundleDeploymentDisplay {
                state: String::new(),
                message: message.into(),
            },
            ..Default::default()
        });
        bd
    }

    #[test]
    fn non_ready_rows_come_first_worst_first() {
        let list = vec![
            bd("a", "web", "s-a:b", true, ""),
            bd(
                "c",
                "web",
                "s-a:b",
                false,
                "Deployment demo/web not ready: 0 of 1 replicas updated",
            ),
            bd("b", "web", "", false, ""),
            bd("a", "config", "s-a:b", true, ""),
        ];
        let got: Vec<(String, String, String, bool)> = rows(&list)
            .into_iter()
            .map(|r| (r.cluster, r.bundle, r.state, r.ready))
            .collect();
        let want = [
            ("b", "web", "WaitApplied", false),
            ("c", "web", "NotReady", false),
            ("a", "config", "Ready", true),
            ("a", "web", "Ready", true),
        ];
        let want: Vec<(String, String, String, bool)> = want
            .iter()
            .map(|(c, b, s, r)| (c.to_string(), b.to_string(), s.to_string(), *r))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_table_and_the_json_carry_the_same_rows() {
        let report = Report {
            gitrepo: None,
            items: rows(&[
                bd(
                    "prod-1",
                    "demo-web",
                    "s-a:b",
                    false,
                    "Deployment demo/web not ready",
                ),
                bd("dev-1", "demo-web", "s-a:b", true, ""),
            ]),
        };
        let table = render(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "CLUSTER   BUNDLE     STATE      READY   MESSAGE");
        assert_eq!(
            lines[1],
            "prod-1    demo-web   NotReady   no      Deployment demo/web not ready"
        );
        assert_eq!(lines[2], "dev-1     demo-web   Ready      yes");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["items"][0]["cluster"], "prod-1");
        assert_eq!(json["items"][0]["state"], "NotReady");
        assert_eq!(json["items"][1]["ready"], true);
        assert_eq!(json["items"][1]["deploymentID"], "s-a:b");
        assert!(json.get("gitrepo").is_none());
    }

    #[test]
    fn a_gitrepo_headline_names_its_problems() {
        use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let mut repo = GitRepo::new("demo", Default::default());
        repo.metadata.namespace = Some("fleet-default".into());
        let cond = |t: &str, s: &str, m: &str| Condition {
            type_: t.into(),
            status: s.into(),
            message: m.into(),
            reason: "R".into(),
            last_transition_time:
                flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    flotilla_api::k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            observed_generation: None,
        };
        repo.status = Some(flotilla_api::GitRepoStatus {
            commit: Some("0123456789abcdef".into()),
            ready_clusters: 2,
            desired_ready_clusters: 3,
            conditions: vec![
                cond(
                    "Ready",
                    "False",
                    "web/deployment.yaml: line 3: bad indentation",
                ),
                cond(
                    "Stalled",
                    "True",
                    "web/deployment.yaml: line 3: bad indentation",
                ),
                cond("Reconciling", "False", "ignored"),
            ],
            ..Default::default()
        });
        let report = Report {
            gitrepo: Some(summarize(&repo)),
            items: vec![],
        };
        let text = render(&report);
        assert!(text.starts_with("GitRepo fleet-default/demo: commit 0123456789ab, clusters ready 2/3\n  Stalled: web/deployment.yaml: line 3"), "{text}");
        assert!(!text.contains("  Ready: web/"), "said once: {text}");
        assert!(!text.contains("ignored"), "{text}");
        assert!(text.ends_with("No bundle deployments.\n"), "{text}");

        // Several problems: the first in the conditions, all of them in
        // the display message; each is printed once.
        let st = repo.status.as_mut().unwrap();
        st.display.message = "web/deployment.yaml: line 3: bad indentation; bundle demo-web: targets[0].clusterSelector: unknown operator \"Inn\"".into();
        let text = render(&Report {
            gitrepo: Some(summarize(&repo)),
            items: vec![],
        });
        assert!(
            text.contains(
                "  Also: bundle demo-web: targets[0].clusterSelector: unknown operator \"Inn\"\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("bad indentation").count(), 1, "{text}");
    }
}
