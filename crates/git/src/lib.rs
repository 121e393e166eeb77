//! Flotilla's Git source (git2):
//! - [`mirror`]: one shared bare mirror per (URL, credentials), a cheap
//!   ls-remote poll, and fetches of only the ref that is needed;
//! - [`compile`]: a commit's tree into bundles, recompiling only the
//!   directories whose tree id changed;
//! - [`auth`] and [`tls`]: credentials from a Secret, known_hosts and CA
//!   bundles;
//! - [`webhook`]: push webhooks from GitHub, GitLab, Gitea and Gogs;
//! - [`url`]: URLs with their credentials split off and scrubbed.
//!
//! Every blocking libgit2 call runs on `spawn_blocking` under a deadline.
//! No credential reaches a log line, a status field or an error message.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod compile;
pub mod mirror;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod url;
pub mod webhook;

pub use auth::{Credentials, Tls};
pub use compile::{CompileCache, CompileError, CompiledCommit, compile_commit};
pub use git2::{self, Oid};
pub use mirror::{GitError, Mirrors, RemoteRefs, Source, Synced, Want};
