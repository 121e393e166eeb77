//! Charts from OCI registries, through the distribution API: `oci-client`
//! answers the registry's authentication (a bearer token, or basic), and
//! the tag list, the manifest and the chart layer are then read with the
//! resolver's own size-capped GETs, so a hostile registry cannot make the
//! controller hold more than the caps: 4 MiB of tags or manifest, and the
//! archive limit for the layer. The manifest is read once, and only the
//! chart layer is fetched (a provenance layer beside it is fine).

use crate::error::ChartError;
use crate::resolver::{Auth, Resolver};
use crate::source::Access;

/// Helm's chart layer in an OCI manifest.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The largest tag list or manifest read.
const MAX_METADATA_BYTES: usize = 4 << 20;
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// One repository of one registry, authorized to pull.
pub(crate) struct Registry<'a> {
    resolver: &'a Resolver,
    access: &'a Access,
    chart: &'a str,
    shown: &'a str,
    /// `https://host[:port]`.
    base: String,
    repository: String,
    auth: Auth,
}

impl<'a> Registry<'a> {
    /// Parses `reference` (`registry[:port]/path/name`) and asks the
    /// registry how to pull from it.
    pub(crate) async fn connect(
        resolver: &'a Resolver,
        reference: &str,
        access: &'a Access,
        chart: &'a str,
        shown: &'a str,
    ) -> Result<Registry<'a>, ChartError> {
        let parsed: oci_client::Reference = reference.parse().map_err(|e| ChartError::Invalid {
            chart: chart.to_owned(),
            message: format!("{shown} is not an OCI reference: {e}"),
        })?;
        let client = oci_client(access, resolver.timeout);
        let registry_auth = match &access.basic {
            Some((u, p)) => oci_client::secrets::RegistryAuth::Basic(u.clone(), p.clone()),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        let token = tokio::time::timeout(
            resolver.timeout,
            client.auth(&parsed, &registry_auth, oci_client::RegistryOperation::Pull),
        )
        .await
        .map_err(|_| resolver.timed_out(chart, shown))?
        .map_err(|e| oci_error(chart, shown, access, &e))?;
        let auth = match token {
            Some(t) => Auth::Bearer(t),
            None if access.basic.is_some() => Auth::Basic,
            None => Auth::None,
        };
        Ok(Registry {
            resolver,
            access,
            chart,
            shown,
            base: format!("https://{}", parsed.resolve_registry()),
            repository: parsed.repository().to_owned(),
            auth,
        })
    }

    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        limit: usize,
    ) -> Result<Vec<u8>, ChartError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        self.resolver
            .get(
                &url,
                self.access,
                &self.auth,
                accept,
                limit,
                self.chart,
                self.shown,
            )
            .await
    }

    /// The repository's tags.
    pub(crate) async fn tags(&self) -> Result<Vec<String>, ChartError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let body = self.get("tags/list", None, MAX_METADATA_BYTES).await?;
        let tags: Tags = serde_json::from_slice(&body).map_err(|e| ChartError::Invalid {
            chart: self.chart.to_owned(),
            message: format!("{}: the tag list does not parse: {e}", self.shown),
        })?;
        Ok(tags.tags.unwrap_or_default())
    }

    /// The chart layer of `tag`'s manifest: (digest, size).
    pub(crate) async fn chart_layer(&self, tag: &str) -> Result<(String, i64), ChartError> {
        let body = self
            .get(
                &format!("manifests/{tag}"),
                Some(MANIFEST_TYPES),
                MAX_METADATA_BYTES,
            )
            .await?;
        let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&body)
            .map_err(|_| ChartError::Invalid {
                chart: self.chart.to_owned(),
                message: format!(
                    "{}:{tag} is not an image manifest (an image index is not a chart)",
                    self.shown
                ),
            })?;
        let layer = manifest
            .layers
            .iter()
            .find(|l| l.media_type == HELM_CHART_LAYER)
            .ok_or_else(|| ChartError::Invalid {
                chart: self.chart.to_owned(),
                message: format!(
                    "{}:{tag} has no Helm chart layer ({HELM_CHART_LAYER})",
                    self.shown
                ),
            })?;
        Ok((layer.digest.clone(), layer.size))
    }

    /// A blob, at most `limit` bytes.
    pub(crate) async fn blob(&self, digest: &str, limit: usize) -> Result<Vec<u8>, ChartError> {
        self.get(&format!("blobs/{digest}"), None, limit).await
    }
}

fn oci_client(access: &Access, timeout: std::time::Duration) -> oci_client::Client {
    let mut config = oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Https,
        accept_invalid_certificates: access.insecure_skip_verify,
        read_timeout: Some(timeout),
        connect_timeout: Some(timeout),
        ..Default::default()
    };
    if let Some(pem) = &access.ca_bundle {
        config
            .extra_root_certificates
            .push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.clone(),
            });
    }
    oci_client::Client::new(config)
}

fn oci_error(
    chart: &str,
    shown: &str,
    access: &Access,
    e: &oci_client::errors::OciDistributionError,
) -> ChartError {
    use oci_client::errors::OciDistributionError as E;
    let message = crate::resolver::scrub(crate::resolver::error_chain(e), access);
    let lower = message.to_ascii_lowercase();
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => ChartError::Auth {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            message,
        },
        _ if lower.contains("certificate") || lower.contains("unknownissuer") => ChartError::Tls {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            message,
        },
        _ if lower.contains("401") || lower.contains("403") || lower.contains("unauthorized") => {
            ChartError::Auth {
                chart: chart.to_owned(),
                from: shown.to_owned(),
                message,
            }
        }
        _ => ChartError::Unreachable {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            message,
        },
    }
}
