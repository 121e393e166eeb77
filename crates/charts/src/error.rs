//! Everything that can go wrong resolving a chart. Each error names the
//! chart and the source (its URL redacted) and never a credential.

use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChartError {
    #[error("chart {chart} from {from}: the source is unreachable: {message}")]
    Unreachable {
        chart: String,
        from: String,
        message: String,
    },
    #[error("chart {chart} from {from}: TLS verification failed: {message}")]
    Tls {
        chart: String,
        from: String,
        message: String,
    },
    #[error("chart {chart} from {from}: authentication failed ({message})")]
    Auth {
        chart: String,
        from: String,
        message: String,
    },
    #[error("chart {chart} is not in {from}")]
    UnknownChart { chart: String, from: String },
    #[error("chart {chart} from {from}: no version matches {constraint:?} (versions: {available})")]
    NoMatchingVersion {
        chart: String,
        from: String,
        constraint: String,
        available: String,
    },
    #[error("chart {chart}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        chart: String,
        size: usize,
        limit: usize,
    },
    #[error("chart {chart}: the archive's digest is {actual}, the repository says {expected}")]
    DigestMismatch {
        chart: String,
        expected: String,
        actual: String,
    },
    #[error("chart {chart} from {from}: {what} answered 404 Not Found")]
    Missing {
        chart: String,
        from: String,
        what: String,
    },
    #[error("chart {chart}: {message}")]
    Invalid { chart: String, message: String },
}

impl ChartError {
    /// The condition reason this error shows as.
    pub fn reason(&self) -> &'static str {
        match self {
            ChartError::Unreachable { .. } => "ChartUnreachable",
            ChartError::Tls { .. } => "ChartTLSFailed",
            ChartError::Auth { .. } => "ChartAuthenticationFailed",
            ChartError::UnknownChart { .. } | ChartError::Missing { .. } => "ChartNotFound",
            ChartError::NoMatchingVersion { .. } => "ChartVersionNotFound",
            ChartError::TooLarge { .. } => "ChartTooLarge",
            ChartError::DigestMismatch { .. } => "ChartDigestMismatch",
            ChartError::Invalid { .. } => "InvalidChart",
        }
    }

    /// Whether trying again later may help (the source may come back).
    pub fn transient(&self) -> bool {
        matches!(self, ChartError::Unreachable { .. })
    }
}
