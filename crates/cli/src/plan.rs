//! `flotilla plan`: what a repository would deploy where, without a cluster.
//!
//! It compiles a checked-out directory, matches each bundle against the
//! Clusters and ClusterGroups of a YAML file, and prints which cluster gets
//! which bundle with which customization. `--explain` says why for every
//! pair; `--cluster NAME -o yaml` prints that cluster's exact manifests.
//!
//! Helm charts from repositories, registries and URLs are resolved as the
//! controller resolves them (the version a range picks, the archive
//! verified and cached by digest under `--chart-cache`), so the plan's
//! deploymentIDs are the ones the controller computes, and the table lists
//! each chart. Credentials come from the environment
//! (`FLOTILLA_HELM_USERNAME`, `FLOTILLA_HELM_PASSWORD`), never a flag.

use anyhow::{Context, bail};
use flotilla_api::{BundleSpec, Cluster, ClusterGroup, GitRepo};
use flotilla_bundle::render::{RenderInput, render};
use flotilla_bundle::{CompileInput, Limits, Tools, compile_repo, deployment_id, load::load_dir};
use flotilla_targeting::values::{self, ClusterContext};
use flotilla_targeting::{
    Decision, Explanation, ObjectKey, ResolvedCluster, effective_targets, resolve_clusters,
    resolve_options,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The checked-out repository.
    #[arg(long, value_name = "DIR")]
    pub repo_dir: PathBuf,
    /// Paths of the repository to deploy (default: a GitRepo in --clusters, or the root).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub paths: Vec<String>,
    /// Clusters and ClusterGroups (and optionally the GitRepo) as Kubernetes YAML.
    #[arg(long, value_name = "FILE")]
    pub clusters: PathBuf,
    /// Only this cluster. With `-o yaml`, print the manifests it receives.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Say why each cluster is or is not targeted.
    #[arg(long)]
    pub explain: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Workspace namespace when the file holds no GitRepo.
    #[arg(long, default_value = "fleet-default")]
    pub namespace: String,
    /// Largest manifest file accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_manifest_bytes, value_name = "BYTES")]
    pub max_manifest_bytes: usize,
    /// Largest bundle accepted (all its files), in bytes.
    #[arg(long, default_value_t = Limits::default().max_bundle_bytes, value_name = "BYTES")]
    pub max_bundle_bytes: usize,
    /// Where downloaded charts are kept, by digest (default: the user's
    /// cache directory).
    #[arg(long, value_name = "DIR")]
    pub chart_cache: Option<PathBuf>,
    /// PEM CA bundle trusted for chart sources, beside the system's.
    #[arg(long, value_name = "FILE")]
    pub helm_ca_file: Option<PathBuf>,
    /// Skip TLS verification of chart sources.
    #[arg(long)]
    pub helm_insecure_skip_tls_verify: bool,
    /// The `helm` binary charts are rendered with (for `-o yaml`; default
    /// `helm` on PATH).
    #[arg(long = "helm", value_name = "FILE")]
    pub helm: Option<PathBuf>,
    /// Send the credentials only to chart sources whose URL matches this
    /// regular expression (as a GitRepo's helmRepoURLRegex); without it,
    /// to every source the repository names.
    #[arg(long, value_name = "REGEX")]
    pub helm_repo_url_regex: Option<String>,
}

/// The charts each bundle resolved, by bundle name.
type Charts = BTreeMap<String, Vec<flotilla_charts::VendoredChart>>;

/// Where charts are cached when `--chart-cache` is not given.
fn default_chart_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("flotilla/charts")
}

/// Resolves every chart the bundles name, as the controller does.
fn resolve_charts(
    args: &PlanArgs,
    bundles: Vec<flotilla_bundle::CompiledBundle>,
    limits: Limits,
) -> anyhow::Result<(Vec<flotilla_bundle::CompiledBundle>, Charts)> {
    if !bundles.iter().any(flotilla_charts::needs_resolution) {
        return Ok((bundles, Charts::new()));
    }
    let ca_bundle = args
        .helm_ca_file
        .as_ref()
        .map(|f| std::fs::read(f).with_context(|| format!("--helm-ca-file {}", f.display())))
        .transpose()?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let basic = env("FLOTILLA_HELM_PASSWORD")
        .map(|p| (env("FLOTILLA_HELM_USERNAME").unwrap_or_default(), p));
    let access = flotilla_charts::Access {
        basic,
        ca_bundle,
        insecure_skip_verify: args.helm_insecure_skip_tls_verify,
    };
    let regex = args
        .helm_repo_url_regex
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--helm-repo-url-regex")?;
    let cache = args.chart_cache.clone().unwrap_or_else(default_chart_cache);
    let resolver = flotilla_charts::Resolver::new(cache, std::time::Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::with_capacity(bundles.len());
    let mut charts = Charts::new();
    for b in bundles {
        let for_source = |src: &flotilla_charts::ChartSource| {
            let mut a = access.clone();
            if regex
                .as_ref()
                .is_some_and(|r| !r.is_match(&src.url_for_credentials()))
            {
                a.basic = None;
            }
            a
        };
        let (resolved, vendored) = runtime
            .block_on(flotilla_charts::resolve_bundle(
                &resolver,
                &b,
                limits,
                &for_source,
            ))
            .with_context(|| format!("bundle {}", b.name))?;
        if !vendored.is_empty() {
            charts.insert(b.name.clone(), vendored);
        }
        out.push(resolved);
    }
    Ok((out, charts))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

/// What the clusters file holds.
struct Fleet {
    clusters: Vec<Cluster>,
    groups: Vec<ClusterGroup>,
    gitrepo: Option<GitRepo>,
}

fn read_fleet(path: &PathBuf) -> anyhow::Result<Fleet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = path.display().to_string();
    let docs = flotilla_bundle::yaml::parse_documents(&file, &text)?;
    let mut fleet = Fleet {
        clusters: Vec::new(),
        groups: Vec::new(),
        gitrepo: None,
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ctx = || format!("{file}: document {} ({kind})", i + 1);
        match kind.as_str() {
            "Cluster" => fleet
                .clusters
                .push(serde_json::from_value(doc).with_context(ctx)?),
            "ClusterGroup" => fleet
                .groups
                .push(serde_json::from_value(doc).with_context(ctx)?),
            "GitRepo" => fleet.gitrepo = Some(serde_json::from_value(doc).with_context(ctx)?),
            _ => bail!("{}: expected Cluster, ClusterGroup or GitRepo", ctx()),
        }
    }
    Ok(fleet)
}

/// One (bundle, cluster) pair of the plan.
struct Row {
    bundle: String,
    cluster: String,
    explanation: Explanation,
    customizations: Vec<String>,
    deployment_id: Option<String>,
    /// The cluster's options (customizations merged, values templated).
    options: Option<flotilla_api::BundleDeploymentOptions>,
    /// Why its templated values failed.
    values_error: Option<String>,
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    print!("{}", plan(args)?);
    Ok(())
}

/// The plan's output, as `run` prints it.
pub fn plan(args: &PlanArgs) -> anyhow::Result<String> {
    let fleet = read_fleet(&args.clusters)?;
    let tree =
        load_dir(&args.repo_dir).with_context(|| format!("reading {}", args.repo_dir.display()))?;
    let default_name = args
        .repo_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".into());
    let (repo_name, namespace, mut paths, targets) = match &fleet.gitrepo {
        Some(g) => (
            g.metadata.name.clone().unwrap_or(default_name),
            g.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| args.namespace.clone()),
            g.spec.paths.clone(),
            effective_targets(&g.spec.targets),
        ),
        None => (
            default_name,
            args.namespace.clone(),
            Vec::new(),
            effective_targets(&[]),
        ),
    };
    if !args.paths.is_empty() {
        paths = args.paths.clone();
    }
    let limits = Limits {
        max_manifest_bytes: args.max_manifest_bytes,
        max_bundle_bytes: args.max_bundle_bytes,
        ..Limits::default()
    };
    let bundles = compile_repo(
        &tree,
        &CompileInput {
            repo_name: &repo_name,
            paths: &paths,
            targets: &targets,
            limits,
            deadline: None,
        },
    )?;
    for w in tree
        .skipped
        .iter()
        .chain(bundles.iter().flat_map(|b| &b.warnings))
    {
        eprintln!("warning: {w}");
    }
    let (bundles, charts) = resolve_charts(args, bundles, limits)?;
    let (clusters, group_errors) = resolve_clusters(&fleet.clusters, &fleet.groups);
    for (group, e) in &group_errors {
        eprintln!("warning: ClusterGroup {group}: {e}; it has no members");
    }
    let clusters: Vec<&ResolvedCluster> = clusters
        .iter()
        .filter(|c| *c.key.namespace == *namespace)
        .filter(|c| args.cluster.as_deref().is_none_or(|n| n == &*c.key.name))
        .collect();
    if let Some(name) = &args.cluster
        && clusters.is_empty()
    {
        bail!(
            "no cluster {name:?} in namespace {namespace:?} of {}",
            args.clusters.display()
        );
    }

    let mut rows = Vec::new();
    for b in &bundles {
        let compiled = flotilla_targeting::CompiledBundle::compile(&b.spec)
            .with_context(|| format!("bundle {}: invalid targeting", b.name))?;
        for c in &clusters {
            let explanation = compiled.explain(*c);
            let mut row = Row {
                bundle: b.name.clone(),
                cluster: c.key.name.to_string(),
                explanation,
                customizations: Vec::new(),
                deployment_id: None,
                options: None,
                values_error: None,
            };
            if let Decision::Deploy { customizations, .. } = &row.explanation.decision {
                row.customizations = names(&b.spec, customizations);
                let merged = options_for(&b.spec, customizations);
                let cluster = fleet
                    .clusters
                    .iter()
                    .find(|k| ObjectKey::of(&k.metadata) == c.key)
                    .expect("a resolved cluster of the file");
                let no_labels = BTreeMap::new();
                match values::for_cluster(&merged, &ClusterContext::of(cluster, &no_labels)) {
                    Ok(options) => {
                        row.deployment_id = Some(deployment_id(&b.spec.content_id, &options));
                        row.options = Some(options);
                    }
                    Err(e) => row.values_error = Some(e),
                }
            }
            rows.push(row);
        }
    }

    let manifests_wanted = args.cluster.is_some() && args.output == Output::Yaml && !args.explain;
    if !manifests_wanted {
        for r in &rows {
            if let Some(e) = &r.values_error {
                eprintln!("error: bundle {} on cluster {}: {e}", r.bundle, r.cluster);
            }
        }
    }
    if manifests_wanted {
        let tools = Tools {
            helm: args
                .helm
                .clone()
                .or_else(|| flotilla_bundle::tools::find_on_path("helm")),
            ..Tools::default()
        };
        return manifests(&bundles, &rows, &tools);
    }
    Ok(match args.output {
        Output::Table => table(&rows, args.explain) + &charts_table(&charts),
        Output::Yaml => serde_saphyr::to_string(&rows_json(&rows, args.explain, &charts))?,
        Output::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&rows_json(&rows, args.explain, &charts))?
        ),
    })
}

fn options_for(
    spec: &BundleSpec,
    customizations: &[usize],
) -> flotilla_api::BundleDeploymentOptions {
    resolve_options(
        &spec.options,
        customizations
            .iter()
            .map(|&i| &spec.target_customizations[i]),
    )
}

fn names(spec: &BundleSpec, customizations: &[usize]) -> Vec<String> {
    customizations
        .iter()
        .map(|&i| {
            spec.target_customizations[i]
                .name
                .clone()
                .unwrap_or_else(|| format!("targetCustomizations[{i}]"))
        })
        .collect()
}

/// Why, in words, for the table.
fn reason(e: &Explanation) -> String {
    let entry = |list: &str, o: &flotilla_targeting::EntryOutcome| match &o.name {
        Some(n) => format!("{list}[{}] ({n})", o.index),
        None => format!("{list}[{}]", o.index),
    };
    match &e.decision {
        Decision::Deploy { target, .. } => format!("matched targets[{target}]"),
        Decision::Restricted => "matches no targetRestrictions entry".into(),
        Decision::TargetSaysDoNotDeploy(i) => format!("targets[{i}] says doNotDeploy"),
        Decision::CustomizationSaysDoNotDeploy(i) => {
            format!("targetCustomizations[{i}] says doNotDeploy")
        }
        Decision::NoTargetMatched if e.targets.is_empty() => "the bundle has no targets".into(),
        Decision::NoTargetMatched => e
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{}: {}",
                    entry("targets", t),
                    t.mismatch.map(|m| m.to_string()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn table(rows: &[Row], explain: bool) -> String {
    let mut lines = vec![vec![
        "BUNDLE".to_owned(),
        "CLUSTER".into(),
        "DEPLOY".into(),
        "CUSTOMIZATION".into(),
        if explain {
            "WHY".into()
        } else {
            "DEPLOYMENT-ID".into()
        },
    ]];
    for r in rows
        .iter()
        .filter(|r| explain || r.deployment_id.is_some() || r.values_error.is_some())
    {
        lines.push(vec![
            r.bundle.clone(),
            r.cluster.clone(),
            if r.values_error.is_some() {
                "error".into()
            } else if r.deployment_id.is_some() {
                "yes".into()
            } else {
                "no".into()
            },
            if r.customizations.is_empty() {
                "-".into()
            } else {
                r.customizations.join(",")
            },
            match (&r.values_error, explain) {
                (Some(_), _) => "templated values failed (see stderr)".into(),
                (None, true) => reason(&r.explanation),
                (None, false) => r.deployment_id.as_deref().map(short_id).unwrap_or_default(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", cells.join("   ").trim_end())
        })
        .collect()
}

/// `s-<12 hex>:<12 hex>`: enough to tell deployments apart in a table.
fn short_id(id: &str) -> String {
    id.split(':')
        .map(|part| {
            part.chars()
                .take(if part.starts_with("s-") { 14 } else { 12 })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// The charts the bundles resolved, after the plan's table.
fn charts_table(charts: &Charts) -> String {
    if charts.is_empty() {
        return String::new();
    }
    let mut lines = vec![["BUNDLE", "CHART", "VERSION", "DIGEST", "FROM"].map(String::from)];
    for (bundle, list) in charts {
        for c in list {
            let digest = c.digest.trim_start_matches("sha256:");
            lines.push([
                bundle.clone(),
                c.name.clone(),
                c.version.clone(),
                format!("sha256:{}", &digest[..digest.len().min(12)]),
                c.source.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let body: String = lines
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("{}\n", cells.join("   ").trim_end())
        })
        .collect();
    format!("\n{body}")
}

fn rows_json(rows: &[Row], explain: bool, charts: &Charts) -> Value {
    Value::Array(
        rows.iter()
            .filter(|r| explain || r.deployment_id.is_some() || r.values_error.is_some())
            .map(|r| {
                let mut v = json!({
                    "bundle": r.bundle,
                    "cluster": r.cluster,
                    "deploy": r.deployment_id.is_some(),
                    "customizations": r.customizations,
                });
                if let Some(e) = &r.values_error {
                    v["valuesError"] = json!(e);
                }
                if let Some(id) = &r.deployment_id {
                    v["deploymentID"] = json!(id);
                }
                if explain {
                    v["why"] = json!(reason(&r.explanation));
                }
                if let Some(list) = charts.get(&r.bundle) {
                    v["charts"] = list
                        .iter()
                        .map(|c| {
                            json!({"name": c.name, "version": c.version, "digest": c.digest, "from": c.source})
                        })
                        .collect();
                }
                v
            })
            .collect(),
    )
}

/// Every manifest the selected cluster receives, as one YAML stream.
fn manifests(
    bundles: &[flotilla_bundle::CompiledBundle],
    rows: &[Row],
    tools: &Tools,
) -> anyhow::Result<String> {
    let mut out = String::new();
    for r in rows {
        if let Some(e) = &r.values_error {
            bail!("bundle {} on cluster {}: {e}", r.bundle, r.cluster);
        }
        let Some(options) = &r.options else {
            continue;
        };
        let b = bundles
            .iter()
            .find(|b| b.name == r.bundle)
            .expect("row of a compiled bundle");
        let objects = render(&RenderInput {
            content: &b.content,
            options,
            bundle_name: &b.name,
            labels: &b.labels,
            annotations: &BTreeMap::new(),
            cluster_scoped: &BTreeSet::new(),
            tools,
        })
        .with_context(|| format!("rendering bundle {} for cluster {}", b.name, r.cluster))?;
        out.push_str(&format!(
            "# bundle {} ({})\n",
            b.name,
            r.deployment_id.as_deref().unwrap_or_default()
        ));
        for o in objects {
            out.push_str(&format!("---\n{}", serde_saphyr::to_string(&o)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata")
            .join(rel)
    }

    fn args(fleet: &str) -> PlanArgs {
        PlanArgs {
            repo_dir: testdata("repos/multi-path"),
            paths: vec![],
            clusters: testdata(fleet),
            cluster: None,
            explain: false,
            output: Output::Table,
            namespace: "fleet-default".into(),
            max_manifest_bytes: Limits::default().max_manifest_bytes,
            max_bundle_bytes: Limits::default().max_bundle_bytes,
            chart_cache: None,
            helm_ca_file: None,
            helm_insecure_skip_tls_verify: false,
            helm_repo_url_regex: None,
            helm: None,
        }
    }

    fn golden(name: &str, actual: &str) {
        let path = testdata("golden").join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "{} differs (UPDATE_GOLDEN=1)\n{actual}",
            path.display()
        );
    }

    #[test]
    fn table_lists_targeted_pairs_with_customizations() {
        let out = plan(&args("plan-fleet.yaml")).unwrap();
        golden("plan.table.txt", &out);
        assert!(!out.contains("dev-eu"), "dev-eu is not targeted: {out}");
        let prod_web = out
            .lines()
            .find(|l| l.starts_with("web-apps-web") && l.contains("prod-eu"))
            .unwrap();
        assert!(
            prod_web.contains("yes      prod"),
            "the prod customization applies: {prod_web}"
        );
    }

    #[test]
    fn explain_names_the_failing_criterion() {
        let out = plan(&PlanArgs {
            explain: true,
            ..args("plan-fleet.yaml")
        })
        .unwrap();
        golden("plan.explain.txt", &out);
        let dev = out
            .lines()
            .find(|l| l.contains("apps-web") && l.contains("dev-eu"))
            .unwrap();
        assert!(
            dev.contains("no") && dev.contains("targets[0] (prod): clusterSelector does not match"),
            "{dev}"
        );
        assert!(
            dev.contains("targets[1] (staging): clusterName differs"),
            "{dev}"
        );
    }

    #[test]
    fn one_cluster_as_yaml_is_its_exact_manifests() {
        let out = plan(&PlanArgs {
            cluster: Some("prod-eu".into()),
            output: Output::Yaml,
            ..args("plan-fleet.yaml")
        })
        .unwrap();
        golden("plan.prod-eu.yaml", &out);
        assert!(
            out.contains("replicas: 5"),
            "the prod overlay applies on prod-eu"
        );
        assert!(out.contains("kind: PodDisruptionBudget"));
    }

    #[test]
    fn charts_are_resolved_listed_and_part_of_the_deployment_ids() {
        use flotilla_charts::testing::*;
        let tmp = TempDir::new("flotilla-plan-charts");
        let ca = TestCa::new();
        let server = ChartServer::start(ServerOptions {
            auth: None,
            tls: Some(&ca),
        });
        publish_test_charts(&server);
        let replace = fleet_examples_replacements(&server);
        let replace: Vec<(&str, &str)> = replace
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let repo = tmp.path().join("repo");
        for (path, bytes) in repo_files(&testdata("repos/fleet-examples-helm"), &replace) {
            let file = repo.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        let fleet = tmp.path().join("fleet.yaml");
        std::fs::write(
            &fleet,
            "kind: ClusterGroup\napiVersion: flotilla.dev/v1alpha1\nmetadata: {name: default, namespace: fleet-default}\nspec: {selector: {}}\n---\nkind: Cluster\napiVersion: flotilla.dev/v1alpha1\nmetadata: {name: c1, namespace: fleet-default, labels: {env: test}}\nspec: {}\n",
        )
        .unwrap();
        let ca_file = tmp.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        let charts_args = |cache: &str| PlanArgs {
            repo_dir: repo.clone(),
            clusters: fleet.clone(),
            chart_cache: Some(tmp.path().join(cache)),
            helm_ca_file: Some(ca_file.clone()),
            ..args("plan-fleet.yaml")
        };
        let out = plan(&charts_args("cache")).unwrap();
        let chart_line = |bundle: &str| {
            out.lines()
                .find(|l| l.starts_with(bundle) && l.contains("sha256:"))
                .unwrap_or_else(|| panic!("no chart line for {bundle}: {out}"))
                .to_owned()
        };
        let tc = chart_line("repo-multi-cluster-helm-target-customizations");
        assert!(
            tc.contains("guestbook") && tc.contains(&server.url()),
            "{tc}"
        );
        assert!(
            chart_line("repo-single-cluster-helm-oci").contains("oci://127.0.0.1:"),
            "{out}"
        );
        assert!(
            chart_line("repo-single-cluster-helm-multi-chart-monitoring-crd")
                .contains("104.1.0+up57.0.3")
        );
        // The test customization takes 0.1.0: its deploymentID differs
        // from the one 0.0.0 would give.
        let json_out = plan(&PlanArgs {
            output: Output::Json,
            ..charts_args("cache")
        })
        .unwrap();
        let rows: Vec<Value> = serde_json::from_str(&json_out).unwrap();
        let row = rows
            .iter()
            .find(|r| r["bundle"] == "repo-multi-cluster-helm-target-customizations")
            .unwrap();
        assert_eq!(row["customizations"], json!(["test"]));
        let versions: Vec<&str> = row["charts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["0.0.0", "0.1.0"]);

        // The source gone and nothing cached: the error names the chart.
        drop(server);
        let err = plan(&charts_args("empty-cache")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("chart") && text.contains("unreachable"),
            "{text}"
        );
    }

    fn per_cluster(repo: &str, fleet: &str, cluster: &str) -> anyhow::Result<String> {
        plan(&PlanArgs {
            repo_dir: testdata(repo),
            clusters: testdata(fleet),
            cluster: Some(cluster.into()),
            output: Output::Yaml,
            helm: Some(testdata("helm-shim/helm")),
            ..args("plan-fleet.yaml")
        })
    }

    /// Every object of a `-o yaml` plan, by (kind, namespace, name).
    fn objects(out: &str) -> BTreeMap<(String, String, String), Value> {
        flotilla_bundle::yaml::parse_documents("plan", out)
            .unwrap()
            .into_iter()
            .map(|o| {
                let key = (
                    o["kind"].as_str().unwrap_or_default().to_owned(),
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
                (key, o)
            })
            .collect()
    }

    fn get<'a>(
        objs: &'a BTreeMap<(String, String, String), Value>,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Option<&'a Value> {
        objs.get(&(kind.to_owned(), ns.to_owned(), name.to_owned()))
    }

    /// The fleet-examples layout (testdata/repos/fleet-examples) rendered
    /// for dev, test and prod, against goldens, and what fleet-examples'
    /// READMEs say each environment gets.
    #[test]
    fn fleet_examples_render_per_environment_as_fleet_documents() {
        for cluster in ["dev-1", "test-1", "prod-1"] {
            let out =
                per_cluster("repos/fleet-examples", "fleet-examples-fleet.yaml", cluster).unwrap();
            golden(&format!("fleet-examples.{cluster}.yaml"), &out);
            let objs = objects(&out);
            let replicas = |ns: &str, name: &str| {
                get(&objs, "Deployment", ns, name)
                    .map(|d| d["spec"]["replicas"].as_i64().unwrap_or(1))
            };
            let svc_type =
                |ns: &str| get(&objs, "Service", ns, "frontend").map(|s| s["spec"]["type"].clone());
            // single-cluster: the same everywhere.
            assert_eq!(
                replicas("fleet-helm-example", "frontend"),
                Some(2),
                "{cluster}: helm values"
            );
            assert_eq!(
                replicas("fleet-kustomize-example", "redis-follower"),
                Some(0),
                "{cluster}: the dev overlay"
            );
            assert!(
                get(
                    &objs,
                    "Deployment",
                    "fleet-manifest-example",
                    "redis-leader"
                )
                .is_some()
            );
            assert_eq!(
                replicas("", "frontend"),
                Some(1),
                "{cluster}: simple/ names no namespace (the agent's default)"
            );
            // multi-cluster: per environment.
            for ns in [
                "fleet-mc-helm-example",
                "fleet-mc-kustomize-example",
                "fleet-mc-manifest-example",
            ] {
                let follower = replicas(ns, "redis-follower").unwrap_or(0);
                match cluster {
                    "dev-1" => {
                        assert_eq!(follower, 0, "{cluster} {ns}: no followers in dev");
                        assert_eq!(replicas(ns, "frontend"), Some(1), "{cluster} {ns}");
                        let sel = &get(&objs, "Service", ns, "redis-follower").unwrap()["spec"]["selector"]
                            ["role"];
                        assert_eq!(sel, "leader", "{cluster} {ns}");
                    }
                    "test-1" => {
                        assert_eq!(replicas(ns, "frontend"), Some(3), "{cluster} {ns}");
                        assert_eq!(svc_type(ns).unwrap(), "NodePort", "{cluster} {ns}");
                    }
                    _ => {
                        assert_eq!(replicas(ns, "frontend"), Some(3), "{cluster} {ns}");
                        assert_eq!(svc_type(ns).unwrap(), "LoadBalancer", "{cluster} {ns}");
                        assert_eq!(follower, 2, "{cluster} {ns}");
                    }
                }
            }
        }
    }

    /// Fleet's templated values, for three clusters with different
    /// labels, annotations and templateValues.
    #[test]
    fn templated_values_follow_each_cluster() {
        for cluster in ["eu-prod", "us-prod", "ap-dev"] {
            let out = per_cluster(
                "repos/templated-values",
                "templated-values-fleet.yaml",
                cluster,
            )
            .unwrap();
            golden(&format!("templated-values.{cluster}.yaml"), &out);
        }
        let out = per_cluster(
            "repos/templated-values",
            "templated-values-fleet.yaml",
            "eu-prod",
        )
        .unwrap();
        let objs = objects(&out);
        let d = get(&objs, "Deployment", "templated", "api").unwrap();
        assert_eq!(d["spec"]["replicas"], 5, "a templateValue, as a number");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example.com/api:v2.1.0"
        );
        let values: Value = serde_json::from_str(
            get(&objs, "ConfigMap", "templated", "settings").unwrap()["data"]["values.json"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            values,
            json!({
                "cluster": "eu-prod", "workspace": "fleet-default", "region": "eu-west-1",
                "owner": "team-eu", "replicas": 5, "tier": "GOLD", "eu-west-1-enabled": true,
                "env": "prod", "image": {"tag": "v2.1.0"}, "gdpr": true,
                "endpoints": ["https://eu-1.example.com", "https://eu-2.example.com"],
            })
        );
        // Each cluster's deploymentID reflects its values.
        let table = plan(&PlanArgs {
            repo_dir: testdata("repos/templated-values"),
            clusters: testdata("templated-values-fleet.yaml"),
            output: Output::Json,
            ..args("plan-fleet.yaml")
        })
        .unwrap();
        let rows: Vec<Value> = serde_json::from_str(&table).unwrap();
        let ids: BTreeSet<&str> = rows
            .iter()
            .map(|r| r["deploymentID"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3, "{rows:?}");
    }

    #[test]
    fn json_output_and_unknown_cluster() {
        let out = plan(&PlanArgs {
            output: Output::Json,
            ..args("plan-fleet.yaml")
        })
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .all(|r| r["deploy"] == true && r["deploymentID"].is_string())
        );
        let err = plan(&PlanArgs {
            cluster: Some("nope".into()),
            ..args("plan-fleet.yaml")
        })
        .unwrap_err();
        assert!(err.to_string().contains("no cluster \"nope\""), "{err}");
    }
}
