//! An embedded Kubernetes-compatible API server: the cluster of
//! `flotilla dev` and the substrate of every integration and e2e test.
//! It depends on nothing from the engine.
//!
//! Layers, top-down: [`server`] runs it (in process or over TCP), [`http`]
//! parses requests and streams watches, [`api`] decides what each verb
//! means, [`gc`] runs the server's own controllers (garbage collection,
//! namespace and CRD cleanup), and [`store`] versions and remembers.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod api;
pub mod defaults;
pub mod error;
pub mod fields;
pub mod gc;
pub mod http;
pub mod jsonpath;
pub mod limits;
pub mod meta;
pub mod normalize;
pub mod openapi;
pub mod protobuf;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod server;
pub mod smp;
pub mod store;
pub mod table;
pub mod testing;
pub mod wal;

pub use error::ApiError;
pub use server::{Config, Server};
pub use store::{MemoryStore, Store};
