//! The `flotilla` binary. Argument parsing and wiring live in [`cli`].

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod controller;
mod crds;
mod dev;
mod status_cmd;

fn main() -> std::process::ExitCode {
    cli::run()
}

use flotilla::kube_client;
