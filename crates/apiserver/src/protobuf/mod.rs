//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl's typed commands (`create namespace|configmap|secret|...`) and
//! client-go send for the built-in kinds.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` envelope naming
//! the apiVersion and kind of the message inside. The message is decoded
//! with the `k8s-pb` types and converted to the JSON the rest of the
//! server works with, as Go's JSON encoding of the same object would
//! read: zero scalars of non-pointer fields are left out (`omitempty`),
//! embedded structs are inlined, times are RFC 3339, quantities and
//! int-or-strings are their JSON forms, and bytes are base64.
//!
//! The per-message conversions are generated (`gen/protobuf_json.py`).

mod generated;

use base64::Engine;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The first bytes of every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";

/// A message as the JSON Go would write for it.
pub trait Json {
    fn json(&self) -> Value;
    /// Is this the zero value, which `omitempty` leaves out?
    fn is_zero(&self) -> bool {
        false
    }
}

impl Json for String {
    fn json(&self) -> Value {
        json!(self)
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Json for $t {
            fn json(&self) -> Value {
                json!(self)
            }
            fn is_zero(&self) -> bool {
                *self == <$t>::default()
            }
        }
    )*};
}
scalar!(bool, i32, i64, f64);

/// `bytes` fields: base64, as Go encodes `[]byte`.
impl Json for Vec<u8> {
    fn json(&self) -> Value {
        json!(base64::engine::general_purpose::STANDARD.encode(self))
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl<T: Json> Json for BTreeMap<String, T> {
    fn json(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.clone(), v.json())).collect())
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

/// What a list holds: messages and strings (a `Vec<u8>` is `bytes`,
/// above). The generated code marks each message.
pub trait Item: Json {}
impl Item for String {}
impl Item for i32 {}
impl Item for i64 {}

impl<T: Item> Json for Vec<T> {
    fn json(&self) -> Value {
        Value::Array(self.iter().map(Json::json).collect())
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

/// A field as Go's `omitempty` writes it: absent when unset or zero.
/// Messages are written even when empty, as Go writes struct fields.
pub fn field<F: Field>(m: &mut Map<String, Value>, name: &str, v: &F) {
    if let Some(v) = v.present()
        && !v.is_zero()
    {
        m.insert(name.to_owned(), v.json());
    }
}

/// A pointer field whose zero means something (`replicas: 0`,
/// `automountServiceAccountToken: false`): written whenever set.
pub fn keep<F: Field>(m: &mut Map<String, Value>, name: &str, v: &F) {
    if let Some(v) = v.present() {
        m.insert(name.to_owned(), v.json());
    }
}

/// An embedded Go struct: its fields become the parent's.
pub fn inline<T: Json>(m: &mut Map<String, Value>, v: &Option<T>) {
    if let Some(Value::Object(inner)) = v.as_ref().map(Json::json) {
        m.extend(inner);
    }
}

/// Optional fields are `Option<T>`; lists and maps are always present.
pub trait Field {
    type Inner: Json;
    fn present(&self) -> Option<&Self::Inner>;
}

impl<T: Json> Field for Option<T> {
    type Inner = T;
    fn present(&self) -> Option<&T> {
        self.as_ref()
    }
}

impl<T: Item> Field for Vec<T> {
    type Inner = Vec<T>;
    fn present(&self) -> Option<&Vec<T>> {
        Some(self)
    }
}

impl<T: Json> Field for BTreeMap<String, T> {
    type Inner = BTreeMap<String, T>;
    fn present(&self) -> Option<&Self> {
        Some(self)
    }
}

use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::RawExtension;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

fn timestamp(seconds: i64, nanos: Option<i32>) -> Value {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let base = crate::meta::format_rfc3339(t);
    match nanos {
        Some(n) => json!(format!(
            "{}.{:06}Z",
            base.trim_end_matches('Z'),
            n.max(0) / 1000
        )),
        None => json!(base),
    }
}

impl Json for meta::Time {
    fn json(&self) -> Value {
        timestamp(self.seconds.unwrap_or(0), None)
    }
    /// Go writes a zero time as null; it means "unset".
    fn is_zero(&self) -> bool {
        self.seconds.unwrap_or(0) == 0 && self.nanos.unwrap_or(0) == 0
    }
}

impl Json for meta::MicroTime {
    fn json(&self) -> Value {
        timestamp(self.seconds.unwrap_or(0), Some(self.nanos.unwrap_or(0)))
    }
    fn is_zero(&self) -> bool {
        self.seconds.unwrap_or(0) == 0 && self.nanos.unwrap_or(0) == 0
    }
}

impl Json for meta::Duration {
    /// Go's `time.Duration` string, in seconds (`90s`, `1.5s`).
    fn json(&self) -> Value {
        let ns = self.duration.unwrap_or(0);
        if ns % 1_000_000_000 == 0 {
            json!(format!("{}s", ns / 1_000_000_000))
        } else {
            json!(format!("{}s", ns as f64 / 1e9))
        }
    }
    fn is_zero(&self) -> bool {
        self.duration.unwrap_or(0) == 0
    }
}

/// JSON carried as raw bytes; unparsable bytes become a string rather
/// than being dropped.
fn raw_json(raw: &Option<Vec<u8>>) -> Value {
    let bytes = raw.as_deref().unwrap_or(b"");
    serde_json::from_slice(bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(bytes)))
}

impl Json for meta::FieldsV1 {
    fn json(&self) -> Value {
        raw_json(&self.raw)
    }
}

impl Json for RawExtension {
    fn json(&self) -> Value {
        raw_json(&self.raw)
    }
    fn is_zero(&self) -> bool {
        self.raw.as_ref().is_none_or(Vec::is_empty)
    }
}

impl Json for Quantity {
    fn json(&self) -> Value {
        json!(self.string.clone().unwrap_or_default())
    }
}

impl Json for IntOrString {
    fn json(&self) -> Value {
        match self.r#type.unwrap_or(0) {
            1 => json!(self.str_val.clone().unwrap_or_default()),
            _ => json!(self.int_val.unwrap_or(0)),
        }
    }
    /// The zero IntOrString (int 0) means "unset": a Service port's
    /// targetPort is then defaulted to its port.
    fn is_zero(&self) -> bool {
        self.r#type.unwrap_or(0) == 0 && self.int_val.unwrap_or(0) == 0
    }
}

/// Why a protobuf body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a Kubernetes protobuf envelope, or a damaged message.
    Malformed(String),
    /// A kind this server has no protobuf message for (custom kinds have
    /// none anywhere).
    Unsupported { api_version: String, kind: String },
}

/// Decodes a protobuf body into the object's JSON, with its apiVersion
/// and kind.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        DecodeError::Malformed("the body does not start with the k8s protobuf magic".into())
    })?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(envelope).map_err(|e| {
        DecodeError::Malformed(format!("the envelope is not a runtime.Unknown: {e}"))
    })?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(DecodeError::Malformed(format!(
            "content encoding {:?} is not supported",
            unknown.content_encoding.unwrap_or_default()
        )));
    }
    let raw = unknown.raw.unwrap_or_default();
    let mut object = match generated::decode(&api_version, &kind, &raw) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(DecodeError::Malformed(format!("{kind}: {e}"))),
        None => return Err(DecodeError::Unsupported { api_version, kind }),
    };
    if let Some(o) = object.as_object_mut() {
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut body = MAGIC.to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        }
        .encode(&mut body)
        .unwrap();
        body
    }

    /// As Go's generated marshallers write it: every non-pointer field,
    /// zero or not.
    fn object_meta(name: &str) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: Some(name.into()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            self_link: Some(String::new()),
            uid: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time {
                seconds: Some(0),
                nanos: Some(0),
            }),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_decodes_as_its_json() {
        let secret = core::Secret {
            metadata: Some(object_meta("creds")),
            data: [("password".to_string(), b"s3cr3t".to_vec())].into(),
            r#type: Some("Opaque".into()),
            immutable: Some(false),
            ..Default::default()
        };
        let got = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "labels": {"app": "web"}},
                "data": {"password": "czNjcjN0"},
                "type": "Opaque",
                "immutable": false,
            })
        );
    }

    #[test]
    fn a_deployment_keeps_meaningful_zeros_and_inlines_embedded_structs() {
        let pod = core::PodSpec {
            containers: vec![core::Container {
                name: Some("web".into()),
                image: Some("nginx".into()),
                ports: vec![core::ContainerPort {
                    container_port: Some(80),
                    host_port: Some(0),
                    ..Default::default()
                }],
                resources: Some(core::ResourceRequirements {
                    limits: [(
                        "cpu".to_string(),
                        Quantity {
                            string: Some("500m".into()),
                        },
                    )]
                    .into(),
                    ..Default::default()
                }),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: Some("/healthz".into()),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: Some("http".into()),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                stdin: Some(false),
                ..Default::default()
            }],
            automount_service_account_token: Some(false),
            volumes: vec![core::Volume {
                name: Some("cache".into()),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let d = apps::Deployment {
            metadata: Some(object_meta("web")),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                min_ready_seconds: Some(0),
                selector: Some(meta::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(object_meta("")),
                    spec: Some(pod),
                }),
                strategy: Some(apps::DeploymentStrategy::default()),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        };
        let got = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        let spec = &got["spec"];
        assert_eq!(spec["replicas"], 0, "a pointer's zero is kept");
        assert!(spec.get("minReadySeconds").is_none(), "omitempty");
        assert_eq!(
            spec["strategy"],
            json!({}),
            "structs are written even when empty"
        );
        assert_eq!(got["status"], json!({}));
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["volumes"], json!([{"name": "cache", "emptyDir": {}}]));
        let c = &pod["containers"][0];
        assert_eq!(c["ports"], json!([{"containerPort": 80}]));
        assert_eq!(c["resources"], json!({"limits": {"cpu": "500m"}}));
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"path": "/healthz", "port": "http"}})
        );
        assert!(c.get("stdin").is_none());
        assert_eq!(
            spec["template"]["metadata"],
            json!({"labels": {"app": "web"}})
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(matches!(decode(b"{}"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode(&[MAGIC, &[0xff, 0xff]].concat()),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode(&envelope("example.com/v1", "Widget", vec![])),
            Err(DecodeError::Unsupported {
                api_version: "example.com/v1".into(),
                kind: "Widget".into()
            })
        );
        let truncated = envelope("v1", "ConfigMap", vec![0x0a, 0x10, 0x0a]);
        assert!(matches!(decode(&truncated), Err(DecodeError::Malformed(_))));
    }
}
