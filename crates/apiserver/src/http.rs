//! The HTTP surface: one fallback handler that parses Kubernetes API
//! paths, decodes the request, calls [`Api`] and encodes the answer (JSON,
//! a Table, or a watch stream).

use crate::api::{
    Api, DeleteOptions, ListOptions, PatchType, Propagation, WriteOptions, extra_fields,
};
use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, StoreError};
use crate::table::{Include, table};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Required as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// The longest a watch runs without `timeoutSeconds`.
    pub max_watch: Duration,
    /// Request bodies above this size are refused.
    pub max_body_bytes: usize,
    /// Watches open at once; one more gets 429.
    pub max_watches: usize,
    /// Encoded events a watcher may have waiting for its client, in bytes
    /// (one event always fits).
    pub watch_buffer_bytes: usize,
    /// How long a watcher whose buffer is full may keep the server waiting
    /// before it is closed (its client resumes from its last version).
    pub slow_watcher_timeout: Duration,
    /// Encoded events waiting for their clients, over all watches.
    pub watch_buffer_total_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            bookmark_interval: Duration::from_secs(10),
            max_watch: Duration::from_secs(1800),
            max_body_bytes: crate::limits::MAX_REQUEST_BODY_BYTES,
            max_watches: 10_000,
            watch_buffer_bytes: 1 << 20,
            slow_watcher_timeout: Duration::from_secs(10),
            watch_buffer_total_bytes: 256 << 20,
        }
    }
}

pub struct Shared {
    pub api: Arc<Api>,
    pub config: HttpConfig,
    /// Watches open now.
    pub watches: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of watch events waiting for their clients, over all watches
    /// (`HttpConfig::watch_buffer_total_bytes`).
    pub watch_buffers: Arc<tokio::sync::Semaphore>,
}

/// One watch's way to its client: a bounded channel whose items also hold
/// a share of the watcher's byte budget, released once the client's
/// connection took them. A watcher whose client stops reading is closed
/// after `slow` rather than buffering without end (kube-apiserver's cacher
/// closes unresponsive watchers the same way).
struct WatchOut {
    tx: mpsc::Sender<(Bytes, Option<Permits>)>,
    budget: Arc<tokio::sync::Semaphore>,
    /// Shared by every watch of the server.
    total: Arc<tokio::sync::Semaphore>,
    max_permits: u32,
    slow: Duration,
    resource: String,
}

/// A watch event's share of its watcher's and of the server's buffers.
type Permits = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);

/// Why a watch stopped sending.
enum Stop {
    Closed,
    Slow,
}

impl WatchOut {
    async fn send(&self, bytes: Bytes) -> Result<(), Stop> {
        let want = u32::try_from(bytes.len())
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_permits);
        let wait = async {
            let own = Arc::clone(&self.budget)
                .acquire_many_owned(want)
                .await
                .map_err(|_| Stop::Closed)?;
            let shared = Arc::clone(&self.total)
                .acquire_many_owned(want)
                .await
                .map_err(|_| Stop::Closed)?;
            self.tx
                .send((bytes, Some((own, shared))))
                .await
                .map_err(|_| Stop::Closed)
        };
        match tokio::time::timeout(self.slow, wait).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!(resource = %self.resource, "forcing a watcher closed: its client stopped reading");
                // Its client resumes from its last resourceVersion, or
                // relists: say so, if there is room for one more line.
                let status = ApiError::gone(
                    "the watcher's client stopped reading and was closed; watch again from the last resourceVersion",
                )
                .status();
                let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": status}))
                    .unwrap_or_default();
                line.push(b'\n');
                let _ = self.tx.try_send((Bytes::from(line), None));
                Err(Stop::Slow)
            }
        }
    }

    async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Counts one open watch until dropped.
struct WatchSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    // The body is read by `dispatch`, under the limit, so that a body over
    // it gets a Kubernetes Status rather than axum's plain text.
    axum::Router::new()
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared)
}

const AGGREGATED_DISCOVERY: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn json_response(code: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

async fn dispatch(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().to_owned();
    if let Some(token) = &shared.config.token
        && !matches!(path.as_str(), "/healthz" | "/readyz" | "/livez")
    {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| token_matches(g, token)) {
            return error_response(&ApiError::unauthorized());
        }
    }
    let limit = shared.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return error_response(&body_too_large(limit));
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return error_response(&body_too_large(limit)),
    };
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let req = Request {
        method,
        path,
        query,
        headers,
        body,
    };
    match handle(&shared, &req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(method = %req.method, path = %req.path, code = e.code, reason = e.reason, "request failed");
            error_response(&e)
        }
    }
}

struct Request {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Request {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn header(&self, h: header::HeaderName) -> &str {
        self.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn wants_table(&self) -> bool {
        self.header(header::ACCEPT)
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    }

    /// Does the client take aggregated discovery (kubectl asks for it
    /// first, falling back to the legacy documents)?
    fn wants_aggregated_discovery(&self) -> bool {
        self.header(header::ACCEPT).split(',').any(|a| {
            let params: Vec<&str> = a.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&"v=v2")
                && params.contains(&"as=APIGroupDiscoveryList")
        })
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.q("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun must be All, not {other:?}"
            ))),
        }
    }

    fn write_options(&self) -> ApiResult<WriteOptions> {
        let manager = match self.q("fieldManager") {
            Some(m) if !m.is_empty() => Some(m.to_owned()),
            _ => {
                // Kubernetes derives a manager from the User-Agent.
                let ua = self.header(header::USER_AGENT);
                let name = ua.split('/').next().unwrap_or("").trim();
                Some(if name.is_empty() {
                    "unknown".into()
                } else {
                    name.to_owned()
                })
            }
        };
        let validation = crate::schema::FieldValidation::parse(self.q("fieldValidation"))
            .map_err(ApiError::bad_request)?;
        Ok(WriteOptions {
            validation,
            warnings: Default::default(),
            dry_run: self.dry_run()?,
            field_manager: if self.method == Method::PATCH
                && self
                    .header(header::CONTENT_TYPE)
                    .starts_with("application/apply-patch")
            {
                self.q("fieldManager")
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
            } else {
                manager
            },
            force: self.flag("force"),
        })
    }

    /// A JSON (or YAML) request body.
    fn body_value(&self) -> ApiResult<Value> {
        let ct = self.header(header::CONTENT_TYPE);
        let mime = ct.split(';').next().unwrap_or("").trim();
        match mime {
            "" | "application/json" | "*/*" => serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"))),
            "application/yaml" | "application/x-yaml" | "text/yaml" => {
                let text = std::str::from_utf8(&self.body)
                    .map_err(|_| ApiError::bad_request("a YAML body must be UTF-8"))?;
                serde_saphyr::from_str(text)
                    .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
            }
            "application/vnd.kubernetes.protobuf" => {
                crate::protobuf::decode(&self.body).map_err(|e| match e {
                    crate::protobuf::DecodeError::Malformed(why) => {
                        ApiError::bad_request(format!("invalid protobuf body: {why}"))
                    }
                    crate::protobuf::DecodeError::Unsupported { api_version, kind } => {
                        ApiError::unsupported_media_type(format!(
                            "no protobuf message is known for {kind} ({api_version}); send application/json"
                        ))
                    }
                })
            }
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other:?})"
            ))),
        }
    }

    fn list_options(&self, rt: &ResourceType) -> ApiResult<ListOptions> {
        Ok(ListOptions {
            labels: LabelSelector::parse(self.q("labelSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            fields: FieldSelector::parse(self.q("fieldSelector").unwrap_or(""), extra_fields(rt))
                .map_err(ApiError::bad_request)?,
            limit: match self.q("limit") {
                None | Some("") => None,
                Some(l) => Some(l.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit must be a number, not {l:?}"))
                })?),
            },
            continue_token: self
                .q("continue")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        })
    }

    fn delete_options(&self) -> ApiResult<DeleteOptions> {
        let mut opts = DeleteOptions {
            dry_run: self.dry_run()?,
            ..Default::default()
        };
        let mut policy = self.q("propagationPolicy").map(str::to_owned);
        if let Some(orphan) = self.q("orphanDependents") {
            policy.get_or_insert_with(|| {
                if orphan == "true" {
                    "Orphan".into()
                } else {
                    "Background".into()
                }
            });
        }
        if !self.body.is_empty() {
            let body = self.body_value().map_err(|e| {
                ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message))
            })?;
            if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
                policy = Some(p.to_owned());
            } else if let Some(o) = body.get("orphanDependents").and_then(Value::as_bool) {
                policy = Some(if o { "Orphan" } else { "Background" }.into());
            }
            if body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|x| x == "All"))
            {
                opts.dry_run = true;
            }
            opts.precondition_uid = body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned);
            opts.precondition_version = body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        opts.propagation = policy.as_deref().map(Propagation::parse).transpose()?;
        Ok(opts)
    }
}

/// Where a request points.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

async fn handle(shared: &Arc<Shared>, req: &Request) -> ApiResult<Response> {
    let api = &shared.api;
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    if req.method == Method::GET {
        match segs.as_slice() {
            ["healthz"] | ["readyz"] | ["livez"] => {
                return Ok(
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response(),
                );
            }
            ["version"] => return Ok(json_response(200, &version())),
            ["api"] | ["apis"] if req.wants_aggregated_discovery() => {
                let doc = api.registry.aggregated(segs == ["api"]);
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                return Ok((
                    StatusCode::OK,
                    [
                        (header::CONTENT_TYPE, AGGREGATED_DISCOVERY),
                        (header::VARY, "Accept"),
                    ],
                    bytes,
                )
                    .into_response());
            }
            ["api"] => return Ok(json_response(200, &api.registry.core_versions())),
            ["apis"] => return Ok(json_response(200, &api.registry.group_list())),
            ["api", "v1"] => return discovery(api.registry.resource_list("", "v1")),
            ["apis", group] => {
                let list = api.registry.group_list();
                let found = list["groups"]
                    .as_array()
                    .and_then(|gs| gs.iter().find(|g| g["name"] == *group))
                    .cloned();
                return match found {
                    Some(mut g) => {
                        g["kind"] = json!("APIGroup");
                        g["apiVersion"] = json!("v1");
                        Ok(json_response(200, &g))
                    }
                    None => Err(not_served(&req.path)),
                };
            }
            ["apis", group, version] => {
                return discovery(api.registry.resource_list(group, version));
            }
            ["openapi", "v3"] => {
                return Ok(json_response(200, &crate::openapi::root(&api.registry)));
            }
            ["openapi", "v3", rest @ ..] => {
                return crate::openapi::document_at(&api.registry, &rest.join("/"))
                    .map(|d| json_response(200, &d))
                    .ok_or_else(|| not_served(&req.path));
            }
            _ => {}
        }
    }
    let target = resolve(api, &segs).ok_or_else(|| not_served(&req.path))?;
    let rt = &target.rt;
    let ns = target.namespace.as_deref();
    let status = match target.subresource.as_deref() {
        None => false,
        Some("status") => true,
        Some(other) => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource: subresource {other:?} of {} is not served",
                    rt.plural
                ),
            ));
        }
    };
    // A kind without a status subresource has no `/status` path at all:
    // every verb there is a 404, as on kube-apiserver (not the object).
    if (status && !rt.status) || (rt.namespaced && ns.is_none() && target.name.is_some()) {
        return Err(not_served(&req.path));
    }
    let m = &req.method;
    match (m, target.name.as_deref()) {
        (&Method::GET, None) => {
            let opts = req.list_options(rt)?;
            if req.flag("watch") {
                return watch(shared, req, rt, ns, opts);
            }
            let (items, version, next) = api.list(rt, ns, &opts)?;
            let mut meta = json!({"resourceVersion": version.to_string()});
            if let Some(next) = next {
                meta["continue"] = json!(next);
            }
            if req.wants_table() {
                let include =
                    Include::parse(req.q("includeObject")).map_err(ApiError::bad_request)?;
                let refs: Vec<&Value> = items.iter().map(|o| &**o).collect();
                return Ok(json_response(200, &table(rt, &refs, include, meta)));
            }
            let body = json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.group_version(),
                "metadata": meta,
                "items": items.iter().map(|o| &**o).collect::<Vec<_>>(),
            });
            Ok(json_response(200, &body))
        }
        (&Method::GET, Some(name)) if req.flag("watch") => {
            // A watch on one object: the collection, narrowed to its name.
            let mut opts = req.list_options(rt)?;
            let fields = match req.q("fieldSelector").filter(|f| !f.is_empty()) {
                Some(f) => format!("{f},metadata.name={name}"),
                None => format!("metadata.name={name}"),
            };
            opts.fields =
                FieldSelector::parse(&fields, extra_fields(rt)).map_err(ApiError::bad_request)?;
            watch(shared, req, rt, ns, opts)
        }
        (&Method::GET, Some(name)) => {
            let obj = api.get(rt, ns, name)?;
            if req.wants_table() {
                let include =
                    Include::parse(req.q("includeObject")).map_err(ApiError::bad_request)?;
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                return Ok(json_response(200, &table(rt, &[&obj], include, meta)));
            }
            Ok(json_response(200, &obj))
        }
        (&Method::POST, None) => {
            let opts = req.write_options()?;
            let created = api.create(rt, ns, req.body_value()?, &opts)?;
            Ok(with_warnings(json_response(201, &created), &opts))
        }
        (&Method::PUT, Some(name)) => {
            let opts = req.write_options()?;
            let updated = api.update(rt, ns, name, status, req.body_value()?, &opts)?;
            Ok(with_warnings(json_response(200, &updated), &opts))
        }
        (&Method::PATCH, Some(name)) => {
            let patch_type = PatchType::from_content_type(req.header(header::CONTENT_TYPE))?;
            let opts = req.write_options()?;
            let existed = patch_type == PatchType::Apply && api.get(rt, ns, name).is_ok();
            let patched = api.patch(rt, ns, name, status, patch_type, &req.body, &opts)?;
            let code = if patch_type == PatchType::Apply && !existed {
                201
            } else {
                200
            };
            Ok(with_warnings(json_response(code, &patched), &opts))
        }
        (&Method::DELETE, Some(name)) => {
            let out = api.delete(rt, ns, name, &req.delete_options()?)?;
            Ok(json_response(200, &out))
        }
        (&Method::DELETE, None) => {
            let list = req.list_options(rt)?;
            let out = api.delete_collection(rt, ns, &list, &req.delete_options()?)?;
            Ok(json_response(200, &out))
        }
        (m, _) => Err(ApiError::method_not_supported(format!(
            "the server does not allow this method on the requested resource: {m} {}",
            req.path
        ))),
    }
}

/// The warnings a write collected, as `Warning: 299 - "..."` headers.
fn with_warnings(mut resp: Response, opts: &WriteOptions) -> Response {
    let warnings = opts.warnings.lock().map(|w| w.clone()).unwrap_or_default();
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w));
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// A bearer token compared in constant time, so that the time an answer
/// takes says nothing about how much of a guess was right.
fn token_matches(given: &str, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("Request entity too large: limit is {limit}"),
    )
}

fn not_served(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource (path {path})"),
    )
}

fn discovery(list: Option<Value>) -> ApiResult<Response> {
    list.map(|l| json_response(200, &l)).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    })
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-flotilla",
        "gitCommit": "flotilla",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api/v1/...` or `/apis/{group}/{version}/...`, then
/// `[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`.
fn resolve(api: &Api, segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..] if !matches!(*resource, "status" | "finalize") => {
            (Some(ns.to_string()), {
                let mut r = vec![*resource];
                r.extend_from_slice(tail);
                r
            })
        }
        other => (None, other.to_vec()),
    };
    let (resource, name, sub) = match rest.as_slice() {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let rt = api.registry.get(group, version, resource)?;
    if !rt.namespaced && namespace.is_some() {
        return None;
    }
    Some(Target {
        rt,
        namespace,
        name,
        subresource: sub,
    })
}

/// Does an event's object belong to this watch?
struct Filter {
    group: String,
    resource: String,
    namespace: Option<String>,
    opts: ListOptions,
}

impl Filter {
    fn in_scope(&self, e: &Event) -> bool {
        e.key.resource.group == self.group
            && e.key.resource.resource == self.resource
            && (self.namespace.is_none() || e.key.namespace == self.namespace)
    }
}

fn watch(
    shared: &Arc<Shared>,
    req: &Request,
    rt: &ResourceType,
    ns: Option<&str>,
    opts: ListOptions,
) -> ApiResult<Response> {
    let api = shared.api.clone();
    let filter = Filter {
        group: rt.group.clone(),
        resource: rt.plural.clone(),
        namespace: ns.map(str::to_owned),
        opts: ListOptions {
            limit: None,
            continue_token: None,
            ..opts
        },
    };
    // Watch-list: the current objects as ADDED, then a BOOKMARK marking
    // the end of the initial events, then changes.
    let watch_list = req.flag("sendInitialEvents");
    let bookmarks = req.flag("allowWatchBookmarks");
    match (req.q("sendInitialEvents"), req.q("resourceVersionMatch")) {
        (Some("true"), Some("NotOlderThan")) if bookmarks => {}
        (Some("true"), _) if !bookmarks => {
            return Err(ApiError::invalid(
                "ListOptions",
                "",
                &[(
                    "sendInitialEvents",
                    "sendInitialEvents requires allowWatchBookmarks=true".into(),
                )],
            ));
        }
        (Some("true"), _) => {
            return Err(ApiError::invalid(
                "ListOptions",
                "",
                &[(
                    "resourceVersionMatch",
                    "sendInitialEvents requires resourceVersionMatch=NotOlderThan".into(),
                )],
            ));
        }
        (_, Some(m)) if !m.is_empty() && req.q("sendInitialEvents").is_none() => {
            return Err(ApiError::invalid("ListOptions", "", &[("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into())]));
        }
        _ => {}
    }
    let timeout = match req.q("timeoutSeconds") {
        Some(t) if !t.is_empty() => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request("timeoutSeconds must be a number"))?,
        )
        .min(shared.config.max_watch),
        _ => shared.config.max_watch,
    };
    let table_include = if req.wants_table() {
        Some(Include::parse(req.q("includeObject")).map_err(ApiError::bad_request)?)
    } else {
        None
    };
    let from = match req.q("resourceVersion") {
        _ if watch_list => None,
        None | Some("") | Some("0") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
    };
    let open = shared
        .watches
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let slot = WatchSlot(Arc::clone(&shared.watches));
    if open >= shared.config.max_watches {
        return Err(ApiError::new(
            429,
            "TooManyRequests",
            format!(
                "too many open watches (the server allows {}); retry later",
                shared.config.max_watches
            ),
        ));
    }
    let rt = rt.clone();
    let interval = shared.config.bookmark_interval;
    let (tx, rx) = mpsc::channel(64);
    let max_permits = u32::try_from(shared.config.watch_buffer_bytes.max(1)).unwrap_or(u32::MAX);
    let total = Arc::clone(&shared.watch_buffers);
    let max_permits = max_permits
        .min(u32::try_from(shared.config.watch_buffer_total_bytes.max(1)).unwrap_or(u32::MAX));
    let tx = WatchOut {
        tx,
        budget: Arc::new(tokio::sync::Semaphore::new(max_permits as usize)),
        total,
        max_permits,
        slow: shared.config.slow_watcher_timeout,
        resource: rt.plural.clone(),
    };
    // Start state: synthetic ADDED events for the current objects (no
    // version given), or the events after the given version.
    let (initial, start) = match from {
        Some(v) => (Vec::new(), v),
        None => {
            let (items, version, _) = api.list(&rt, filter.namespace.as_deref(), &filter.opts)?;
            (items, version)
        }
    };
    let watch = api.store.watch(start);
    tokio::spawn(async move {
        let _slot = slot;
        let encode = |kind: &str, object: &Value| -> Bytes {
            let object = match table_include {
                Some(include) => table(
                    &rt,
                    &[object],
                    include,
                    json!({"resourceVersion": object["metadata"]["resourceVersion"]}),
                ),
                None => object.clone(),
            };
            let mut line =
                serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(StoreError::Gone { requested, oldest }) => {
                let status = ApiError::gone(format!(
                    "too old resource version: {requested} ({})",
                    oldest.saturating_sub(1)
                ))
                .status();
                let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": status}))
                    .unwrap_or_default();
                line.push(b'\n');
                let _ = tx.send(Bytes::from(line)).await;
                return;
            }
            Err(e) => {
                let status = ApiError::internal(e.to_string()).status();
                let _ = tx.send(encode("ERROR", &status)).await;
                return;
            }
        };
        for item in initial {
            if tx.send(encode("ADDED", &item)).await.is_err() {
                return;
            }
        }
        if watch_list {
            let end = json!({
                "kind": rt.kind,
                "apiVersion": rt.group_version(),
                "metadata": {
                    "resourceVersion": start.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            });
            let mut line =
                serde_json::to_vec(&json!({"type": "BOOKMARK", "object": end})).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
        let mut seen = start;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let backlog = std::mem::take(&mut watch.backlog);
        for e in backlog {
            seen = seen.max(e.resource_version);
            if let Some((kind, obj)) = translate(&filter, &rt, &e)
                && tx.send(encode(kind, &obj)).await.is_err()
            {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    // Every event up to the current version is already in
                    // the channel: drain it, then the bookmark is exact.
                    let now = api.store.current_version();
                    loop {
                        match watch.live.try_recv() {
                            Ok(e) => {
                                seen = seen.max(e.resource_version);
                                if let Some((kind, obj)) = translate(&filter, &rt, &e)
                                    && tx.send(encode(kind, &obj)).await.is_err()
                                {
                                    return;
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(_)) => return send_expired(&tx).await,
                            Err(TryRecvError::Closed) => return,
                        }
                    }
                    seen = seen.max(now);
                    let bookmark = json!({
                        "kind": rt.kind,
                        "apiVersion": rt.group_version(),
                        "metadata": {"resourceVersion": seen.to_string()},
                    });
                    let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": bookmark})).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                e = watch.live.recv() => match e {
                    Ok(e) => {
                        if e.resource_version <= seen {
                            continue;
                        }
                        seen = e.resource_version;
                        if let Some((kind, obj)) = translate(&filter, &rt, &e)
                            && tx.send(encode(kind, &obj)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => return send_expired(&tx).await,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    // The budget share is released once the connection took the bytes.
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|(b, _permits)| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("a valid response"))
}

async fn send_expired(tx: &WatchOut) {
    let status =
        ApiError::gone("the watch fell behind the event stream; relist and watch again").status();
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    line.push(b'\n');
    let _ = tx.send(Bytes::from(line)).await;
}

/// The event a filtered watch sees: an object that starts matching is
/// ADDED, one that stops matching is DELETED.
fn translate(f: &Filter, rt: &ResourceType, e: &Event) -> Option<(&'static str, Value)> {
    if !f.in_scope(e) {
        return None;
    }
    let now = f.opts.matches(&e.object);
    let present = |o: &Arc<Value>| (*Api::present(rt, o)).clone();
    match e.kind {
        EventType::Added => now.then(|| ("ADDED", present(&e.object))),
        EventType::Deleted => now.then(|| ("DELETED", present(&e.object))),
        EventType::Modified => {
            let before = e.previous.as_ref().is_some_and(|p| f.opts.matches(p));
            match (before, now) {
                (true, true) => Some(("MODIFIED", present(&e.object))),
                (false, true) => Some(("ADDED", present(&e.object))),
                (true, false) => Some(("DELETED", present(&e.object))),
                (false, false) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_exactly_and_only() {
        let t = crate::server::new_token();
        assert!(token_matches(&t, &t));
        assert!(!token_matches(&t[..63], &t));
        assert!(!token_matches(&format!("{t}0"), &t));
        let mut flipped = t.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert!(!token_matches(std::str::from_utf8(&flipped).unwrap(), &t));
        assert_ne!(crate::server::new_token(), t, "fresh each time");
    }
}
