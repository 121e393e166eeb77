//! `flotilla status [gitrepo NAME]`: the per-cluster table.

use flotilla::status::{Selection, fetch, render};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `gitrepo NAME` (or `gitrepo/NAME`): only that GitRepo's bundles.
    #[arg(value_name = "gitrepo NAME", num_args = 0..=2)]
    target: Vec<String>,
    /// The workspace namespace of the GitRepos and Clusters.
    #[arg(short = 'n', long, default_value = "fleet-default")]
    namespace: String,
    /// Every namespace (not with a GitRepo).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
    /// Kubeconfig of the management cluster; defaults to $KUBECONFIG, then
    /// ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "FLOTILLA_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
}

/// `["gitrepo", "demo"]` or `["gitrepo/demo"]` to the GitRepo's name.
fn gitrepo_of(target: &[String]) -> anyhow::Result<Option<String>> {
    let (kind, name) = match target {
        [] => return Ok(None),
        [one] => match one.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (one.as_str(), None),
        },
        [kind, name] => (kind.as_str(), Some(name.as_str())),
        _ => unreachable!("clap takes at most two"),
    };
    if !matches!(
        kind,
        "gitrepo" | "gitrepos" | "gitrepo.flotilla.dev" | "gitrepos.flotilla.dev"
    ) {
        anyhow::bail!("unknown kind {kind:?}: use `flotilla status gitrepo NAME`");
    }
    match name {
        Some(n) if !n.is_empty() => Ok(Some(n.to_owned())),
        _ => anyhow::bail!("name the GitRepo: `flotilla status gitrepo NAME`"),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let gitrepo = gitrepo_of(&args.target)?;
    if args.all_namespaces && gitrepo.is_some() {
        anyhow::bail!("-A lists every namespace; a GitRepo is in one (use -n)");
    }
    let selection = Selection {
        namespace: (!args.all_namespaces).then(|| args.namespace.clone()),
        gitrepo,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let client = crate::kube_client(args.kubeconfig.as_deref()).await?;
        fetch(&client, &selection).await
    })?;
    match args.output {
        Output::Table => print!("{}", render(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitrepo_arguments() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(gitrepo_of(&s(&[])).unwrap(), None);
        assert_eq!(
            gitrepo_of(&s(&["gitrepo", "demo"])).unwrap().as_deref(),
            Some("demo")
        );
        assert_eq!(
            gitrepo_of(&s(&["gitrepo/demo"])).unwrap().as_deref(),
            Some("demo")
        );
        assert!(
            gitrepo_of(&s(&["gitrepo"]))
                .unwrap_err()
                .to_string()
                .contains("name the GitRepo")
        );
        assert!(
            gitrepo_of(&s(&["bundle", "x"]))
                .unwrap_err()
                .to_string()
                .contains("unknown kind")
        );
    }
}
