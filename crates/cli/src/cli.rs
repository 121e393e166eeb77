//! Command-line surface: one subcommand per job.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "GitOps multi-cluster fan-out engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (GitRepo, fan-out, GC, status) against a
    /// management cluster.
    Controller(Box<crate::controller::Args>),
    /// Run the agent of one downstream cluster, inside it.
    Agent(Box<crate::agent::Args>),
    /// Print every Flotilla CRD as YAML, or write one file per CRD.
    Crds(crate::crds::CrdsArgs),
    /// Show which clusters get which bundle of a repository, without a cluster.
    Plan(crate::plan::PlanArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller(args) => crate::controller::run(*args),
        Command::Agent(args) => crate::agent::run(*args),
        Command::Crds(args) => crate::crds::run(&args),
        Command::Plan(args) => crate::plan::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
