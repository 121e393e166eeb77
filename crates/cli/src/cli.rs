//! Command-line surface: one subcommand per job.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    Plan(flotilla::plan::PlanArgs),
    /// Run the whole system on this machine: embedded management and
    /// downstream API servers, the controllers and agents, and a demo
    /// repository to commit to. No cluster needed.
    Dev(Box<crate::dev::Args>),
    /// Per cluster, what is deployed and whether it is healthy.
    Status(crate::status_cmd::Args),
}

pub fn run() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Dev(args) => crate::dev::run(
            *args,
            matches
                .subcommand_matches("dev")
                .expect("the dev subcommand"),
        ),
        Command::Status(args) => crate::status_cmd::run(args),
        Command::Controller(args) => crate::controller::run(*args),
        Command::Agent(args) => crate::agent::run(*args),
        Command::Crds(args) => crate::crds::run(&args),
        Command::Plan(args) => flotilla::plan::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
