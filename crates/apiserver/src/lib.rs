//! An embedded Kubernetes-compatible API server: the cluster of
//! `flotilla dev` and the substrate of every integration and e2e test.
//! It depends on nothing from the engine.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod registry;
pub mod selector;
pub mod store;

pub use store::{MemoryStore, Store};
