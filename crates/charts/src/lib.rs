//! Helm charts resolved when a bundle is compiled, never by an agent:
//! - [`source`]: where a chart comes from (a repository, an OCI registry,
//!   an archive URL), and the access used to fetch it;
//! - [`constraint`]: Helm's version constraints;
//! - [`resolver`]: fetching indexes, tags and archives, verified by digest
//!   and cached by it (OCI registries through `oci`);
//! - [`archive`]: packaged charts read safely;
//! - [`deps`]: chart dependencies vendored into `charts/`;
//! - [`vendor`]: a compiled bundle made self-contained.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod archive;
pub mod constraint;
pub mod deps;
pub mod error;
mod oci;
pub mod resolver;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vendor;

pub use error::ChartError;
pub use resolver::{Resolved, Resolver};
pub use source::{Access, ChartSource};
pub use vendor::{CHARTS_ANNOTATION, VendoredChart, needs_resolution, resolve_bundle};
