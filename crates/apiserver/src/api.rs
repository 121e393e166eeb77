//! API semantics over the store: what create, update, patch and delete
//! mean for object metadata, generation, the status subresource, field
//! ownership, finalizers, namespaces and CRDs. The HTTP layer only parses
//! requests and encodes answers; everything a real kube-apiserver decides
//! is decided here.

use crate::error::{ApiError, ApiResult, success_status};
use crate::fields::{self, Scope, Writer};
use crate::meta;
use crate::registry::{Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ObjectKey, ResourceKey, Store, StoreError, resource_version};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Finalizers the server itself acts on.
pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";
pub const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Options shared by writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// The manager recorded in managedFields (`fieldManager`, or one
    /// derived from the User-Agent).
    pub field_manager: Option<String>,
    /// Server-side apply: take over conflicting fields.
    pub force: bool,
    /// What to do about unknown fields.
    pub validation: crate::schema::FieldValidation,
    /// Warnings for the client (unknown fields dropped under Warn).
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager.as_deref().unwrap_or("unknown")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy must be Background, Foreground or Orphan, not {other:?}"
            ))),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_version: Option<String>,
}

/// How a patch body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let mime = ct.split(';').next().unwrap_or("").trim();
        match mime {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                 (got {other:?})"
            ))),
        }
    }
}

/// List query: selectors and paging.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

impl ListOptions {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// Extra field-selector fields a kind supports, beyond name and namespace.
pub fn extra_fields(rt: &ResourceType) -> &'static [&'static str] {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Event") => &[
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.kind",
            "involvedObject.uid",
            "reason",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.name",
            "regarding.namespace",
            "regarding.kind",
            "reason",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        _ => &[],
    }
}

/// The server's API logic.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
}

/// A retried read-modify-write gives up after this many conflicts.
const RETRIES: usize = 16;

impl Api {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let api = Arc::new(Api {
            store,
            registry: Registry::default(),
        });
        // Serve the CRDs already stored (a durable store after a restart).
        let (crds, _) = api.store.list(
            &ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
            None,
        );
        for crd in crds {
            let _ = api.registry.register_crd(&crd);
        }
        let ns = api
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in SYSTEM_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match api.create(
                &ns,
                None,
                body,
                &WriteOptions {
                    field_manager: Some("flotilla-apiserver".into()),
                    ..Default::default()
                },
            ) {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => panic!("creating namespace {name}: {e}"),
            }
        }
        api
    }

    pub fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            resource: ResourceKey::new(&rt.group, &rt.plural),
            namespace: if rt.namespaced {
                namespace.map(str::to_owned)
            } else {
                None
            },
            name: name.to_owned(),
        }
    }

    /// The object as this version serves it (custom kinds with several
    /// served versions share one stored object).
    pub fn present(rt: &ResourceType, object: &Arc<Value>) -> Arc<Value> {
        let gv = rt.group_version();
        if object.get("apiVersion").and_then(Value::as_str) == Some(gv.as_str()) {
            return object.clone();
        }
        let mut o = (**object).clone();
        o["apiVersion"] = json!(gv);
        Arc::new(o)
    }

    fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::not_found(&rt.group, &rt.plural, name)
    }

    fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> ApiError {
        ApiError::from_store(e, &rt.group, &rt.plural, name)
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Arc<Value>> {
        self.store
            .get(&Self::key(rt, namespace, name))
            .map(|o| Self::present(rt, &o))
            .ok_or_else(|| Self::not_found(rt, name))
    }

    /// A page of matching objects, the version it is consistent at, and
    /// the token for the next page.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<(Vec<Arc<Value>>, u64, Option<String>)> {
        let (items, version) = self.store.list(
            &ResourceKey::new(&rt.group, &rt.plural),
            namespace.filter(|_| rt.namespaced),
        );
        let (start_after, version) = match &opts.continue_token {
            Some(token) => {
                let (v, key) = decode_continue(token)?;
                (Some(key), v)
            }
            None => (None, version),
        };
        let mut out = Vec::new();
        let mut next = None;
        // Names and namespaces cannot hold '/', so the token's key splits
        // back into the (namespace, name) order the store lists in.
        let after = start_after
            .as_deref()
            .map(|k| k.split_once('/').unwrap_or(("", k)));
        for item in items.iter() {
            if let Some(after) = after {
                let ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if (ns, name) <= after {
                    continue;
                }
            }
            if !opts.matches(item) {
                continue;
            }
            if opts.limit.is_some_and(|l| l > 0 && out.len() == l) {
                // There is more: continue after the last returned item.
                next = out
                    .last()
                    .map(|last: &Arc<Value>| encode_continue(version, &sort_key(last)));
                break;
            }
            out.push(Self::present(rt, item));
        }
        Ok((out, version, next))
    }

    fn writer<'a>(
        rt: &ResourceType,
        opts: &'a WriteOptions,
        time: &'a str,
        gv: &'a str,
        scope: Scope,
    ) -> Writer<'a> {
        Writer {
            manager: opts.manager(),
            api_version: gv,
            time,
            scope,
            custom: rt.crd.is_some(),
        }
    }

    /// Field validation of a request's object: unknown fields are dropped
    /// (and refused under Strict, or reported under Warn); values of the
    /// wrong type are Invalid.
    fn validate(
        &self,
        rt: &ResourceType,
        object: &mut Value,
        opts: &WriteOptions,
    ) -> ApiResult<()> {
        if rt.crd.is_none() {
            // Decoding into the built-in type canonicalizes quantities,
            // and refuses what is none.
            if rt.group.is_empty() && rt.kind == "Secret" {
                crate::normalize::string_data(object);
            }
            crate::normalize::quantities(&rt.group, &rt.kind, object).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {e}",
                    rt.kind, rt.version, rt.kind
                ))
            })?;
        }
        let Some(schema) = rt.schema() else {
            return Ok(());
        };
        let mut found = crate::schema::Findings::default();
        crate::schema::walk(object, schema, rt.crd.is_none(), "", &mut found);
        if !found.invalid.is_empty() {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let causes: Vec<(&str, String)> = found
                .invalid
                .iter()
                .map(|(p, m)| (p.as_str(), m.clone()))
                .collect();
            let kind = if rt.crd.is_some() {
                format!("{}.{}", rt.kind, rt.group)
            } else {
                rt.kind.clone()
            };
            return Err(ApiError::invalid(&kind, &name, &causes));
        }
        if found.unknown.is_empty() {
            return Ok(());
        }
        let described: Vec<String> = found
            .unknown
            .iter()
            .map(|p| format!("unknown field {p:?}"))
            .collect();
        match opts.validation {
            crate::schema::FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                rt.kind,
                rt.version,
                rt.kind,
                described.join(", ")
            ))),
            crate::schema::FieldValidation::Warn => {
                if let Ok(mut w) = opts.warnings.lock() {
                    w.extend(described);
                }
                Ok(())
            }
            crate::schema::FieldValidation::Ignore => Ok(()),
        }
    }

    /// POST: creates an object.
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        self.validate(rt, &mut body, opts)?;
        let mut object = self.prepare_create(rt, namespace, body)?;
        let now = meta::now_rfc3339();
        let gv = rt.group_version();
        let scope = if rt.status {
            Scope::NoStatus
        } else {
            Scope::All
        };
        fields::track_update(None, &mut object, &Self::writer(rt, opts, &now, &gv, scope));
        self.store_create(rt, namespace, object, opts.dry_run)
    }

    /// Validates and completes a new object: name, namespace, uid,
    /// timestamps, generation and the kind's own defaults.
    fn prepare_create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
    ) -> ApiResult<Value> {
        let mut object = check_body(rt, body)?;
        let meta = object["metadata"].as_object_mut().expect("checked");
        if meta
            .get("resourceVersion")
            .is_some_and(|v| !v.is_null() && v != "")
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_owned(),
            None => match meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                Some(prefix) => meta::generate_name(prefix),
                None => {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        "",
                        &[(
                            "metadata.name",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        let valid = if rt.kind == "Namespace" {
            meta::is_dns1123_label(&name)
        } else {
            meta::is_dns1123_subdomain(&name)
                || (rt.crd.is_none() && rt.kind == "Event" && !name.contains('/'))
        };
        if !valid {
            return Err(ApiError::invalid(
                &rt.kind,
                &name,
                &[(
                    "metadata.name",
                    format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 {} must consist of lower case alphanumeric characters, '-' or '.'",
                        if rt.kind == "Namespace" {
                            "label"
                        } else {
                            "subdomain"
                        }
                    ),
                )],
            ));
        }
        meta.insert("name".into(), json!(name));
        self.place_in_namespace(rt, namespace, meta, &name)?;
        meta.insert("uid".into(), json!(meta::new_uid()));
        meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        if has_generation(rt) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        for server_owned in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(server_owned);
        }
        if let Some(Value::Array(f)) = meta.get("finalizers") {
            validate_finalizers(rt, &name, f)?;
        }
        validate_metadata_maps(rt, &name, meta)?;
        if rt.status {
            object.as_object_mut().expect("checked").remove("status");
        }
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("", "Namespace") => {
                object["spec"] = json!({"finalizers": [NAMESPACE_FINALIZER]});
                object["status"] = json!({"phase": "Active"});
            }
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                self.check_crd(&object)?;
                add_finalizer(&mut object, CRD_CLEANUP);
                object["status"] = crd_status(&object);
            }
            _ => {}
        }
        if rt.crd.is_none() {
            crate::defaults::apply(&rt.group, &rt.kind, &mut object, None);
            if rt.group == "batch" && rt.kind == "Job" {
                crate::defaults::job_selector(&mut object);
            }
        }
        Ok(object)
    }

    fn place_in_namespace(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        meta: &mut Map<String, Value>,
        name: &str,
    ) -> ApiResult<()> {
        if !rt.namespaced {
            meta.remove("namespace");
            return Ok(());
        }
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let ns = match (namespace, body_ns) {
            (Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(ns), _) | (None, Some(ns)) => ns.to_owned(),
            (None, None) => {
                return Err(ApiError::bad_request(format!(
                    "{} {name:?} is namespaced: the request needs a namespace",
                    rt.kind
                )));
            }
        };
        let ns_rt = self.registry.get("", "v1", "namespaces").expect("built in");
        match self.store.get(&Self::key(&ns_rt, None, &ns)) {
            None => return Err(ApiError::not_found("", "namespaces", &ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        rt.plural
                    ),
                ));
            }
            Some(_) => {}
        }
        meta.insert("namespace".into(), json!(ns));
        Ok(())
    }

    fn check_crd(&self, crd: &Value) -> ApiResult<()> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let types = crate::registry::types_of_crd(crd)
            .map_err(|e| ApiError::invalid("CustomResourceDefinition", name, &[("spec", e)]))?;
        for t in &types {
            if let Some(existing) = self.registry.get(&t.group, &t.version, &t.plural)
                && existing.crd.as_deref() != Some(name)
            {
                return Err(ApiError::invalid(
                    "CustomResourceDefinition",
                    name,
                    &[(
                        "spec.names.plural",
                        format!(
                            "Invalid value: {:?}: already served by the server",
                            t.plural
                        ),
                    )],
                ));
            }
        }
        Ok(())
    }

    fn store_create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = Self::key(
            rt,
            namespace.or(object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)),
            &name,
        );
        if dry_run {
            if self.store.get(&key).is_some() {
                return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
            }
            return Ok(object);
        }
        let stored = self
            .store
            .create(&key, object)
            .map_err(|e| Self::store_err(rt, &name, e))?;
        self.after_write(rt, &stored);
        Ok((*Self::present(rt, &stored)).clone())
    }

    /// Effects of a stored write beyond the object itself.
    fn after_write(&self, rt: &ResourceType, stored: &Value) {
        if rt.group == "apiextensions.k8s.io"
            && rt.kind == "CustomResourceDefinition"
            && let Err(e) = self.registry.register_crd(stored)
        {
            tracing::warn!(crd = %stored["metadata"]["name"], error = %e, "stored CRD cannot be served");
        }
    }

    fn after_delete(&self, rt: &ResourceType, deleted: &Value) {
        if rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition" {
            let name = deleted["metadata"]["name"].as_str().unwrap_or_default();
            self.registry.unregister_crd(name);
        }
    }

    /// PUT: replaces an object (or its status).
    pub fn update(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        status: bool,
        body: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut body = check_body(rt, body)?;
        self.validate(rt, &mut body, opts)?;
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(name);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.namespaced
            && let (Some(url), Some(b)) = (
                namespace,
                body.pointer("/metadata/namespace").and_then(Value::as_str),
            )
            && url != b
            && !b.is_empty()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let expected =
            match body.pointer("/metadata/resourceVersion") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(v) => Some(v.as_str().and_then(|s| s.parse::<u64>().ok()).ok_or_else(
                    || ApiError::bad_request(format!("invalid resourceVersion {v}")),
                )?),
            };
        let current = self
            .store
            .get(&Self::key(rt, namespace, name))
            .ok_or_else(|| Self::not_found(rt, name))?;
        if expected.unwrap_or(0) == 0 && !allows_unconditional_update(rt) {
            return Err(ApiError::invalid(
                &rt.group_resource(),
                name,
                &[(
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        if let Some(v) = expected
            && resource_version(&current) != Some(v)
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &StoreError::Conflict.to_string(),
            ));
        }
        let scope = scope_of(rt, status)?;
        self.write_update(rt, &current, body, scope, opts, false)
    }

    /// The stored result of replacing `current` with `body` in `scope`:
    /// server-owned metadata kept, generation bumped on spec changes,
    /// managed fields tracked (unless the caller, an apply, already did), finalizers
    /// honoured, and no write at all when nothing changed.
    fn write_update(
        &self,
        rt: &ResourceType,
        current: &Arc<Value>,
        body: Value,
        scope: Scope,
        opts: &WriteOptions,
        fields_tracked: bool,
    ) -> ApiResult<Value> {
        let name = current["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // An apply computed the managed fields already; a `/status` write
        // keeps the rest of the current metadata, but not its old entries.
        let applied_fields =
            fields_tracked.then(|| body.pointer("/metadata/managedFields").cloned());
        let mut new = merge_scope(current, body, scope);
        if let Some(entries) = applied_fields
            && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
        {
            match entries {
                Some(v) => meta.insert("managedFields".into(), v),
                None => meta.remove("managedFields"),
            };
        }
        if rt.crd.is_none() {
            crate::defaults::apply(&rt.group, &rt.kind, &mut new, Some(current));
        }
        let cur_meta = current["metadata"].as_object().cloned().unwrap_or_default();
        if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str)
            && Some(uid) != cur_meta.get("uid").and_then(Value::as_str)
            && !uid.is_empty()
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    cur_meta
                        .get("uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            ));
        }
        {
            let meta = new["metadata"].as_object_mut().expect("checked");
            for owned in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
                "generation",
            ] {
                match cur_meta.get(owned) {
                    Some(v) => meta.insert(owned.into(), v.clone()),
                    None => meta.remove(owned),
                };
            }
            meta.remove("selfLink");
            validate_metadata_maps(rt, &name, meta)?;
            if !fields_tracked {
                // Client-sent managedFields are ignored on update.
                match cur_meta.get("managedFields") {
                    Some(v) => meta.insert("managedFields".into(), v.clone()),
                    None => meta.remove("managedFields"),
                };
            }
        }
        let finalizers = |o: &Value| -> Vec<String> {
            o.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(Value::Array(f)) = new.pointer("/metadata/finalizers") {
            validate_finalizers(rt, &name, f)?;
        }
        let deleting = cur_meta.contains_key("deletionTimestamp");
        if deleting {
            let before = finalizers(current);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.kind,
                    &name,
                    &[(
                        "metadata.finalizers",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{added}]"
                        ),
                    )],
                ));
            }
        }
        match (rt.group.as_str(), rt.kind.as_str()) {
            ("apiextensions.k8s.io", "CustomResourceDefinition") if scope != Scope::StatusOnly => {
                self.check_crd(&new)?;
                new["status"] = crd_status(&new);
            }
            ("", "Namespace") if scope != Scope::StatusOnly => {
                new["status"] = current
                    .get("status")
                    .cloned()
                    .unwrap_or(json!({"phase": "Active"}));
            }
            _ => {}
        }
        if has_generation(rt) && spec_changed(rt, current, &new) {
            let g = cur_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        // Nothing changed: nothing is written, nobody is woken.
        if same_but_version(current, &new) {
            return Ok((*Self::present(rt, current)).clone());
        }
        if !fields_tracked {
            let now = meta::now_rfc3339();
            let gv = rt.group_version();
            fields::track_update(
                Some(current),
                &mut new,
                &Self::writer(rt, opts, &now, &gv, scope),
            );
        }
        let key = Self::key(
            rt,
            current
                .pointer("/metadata/namespace")
                .and_then(Value::as_str),
            &name,
        );
        let expected = resource_version(current);
        if opts.dry_run {
            return Ok(new);
        }
        if deleting && finalizers(&new).is_empty() && !blocks_namespace(rt, &new) {
            // The last finalizer is gone: the deletion completes.
            let gone = self
                .store
                .delete(&key, expected)
                .map_err(|e| Self::store_err(rt, &name, e))?;
            self.after_delete(rt, &gone);
            return Ok(new_with_version(new, &gone));
        }
        let stored = self
            .store
            .update(&key, new, expected)
            .map_err(|e| Self::store_err(rt, &name, e))?;
        self.after_write(rt, &stored);
        Ok((*Self::present(rt, &stored)).clone())
    }

    /// PATCH: merge, JSON or apply patches. Merge and JSON patches retry on
    /// a concurrent write unless they name a resourceVersion themselves.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        status: bool,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let scope = scope_of(rt, status)?;
        if patch_type == PatchType::Strategic && rt.crd.is_some() {
            // As on a real server: custom kinds have no patch strategies.
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                 (strategic merge patch does not support custom resources such as {})",
                rt.plural
            )));
        }
        if patch_type == PatchType::Apply {
            return self.apply(rt, namespace, name, scope, body, opts);
        }
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?;
        for _ in 0..RETRIES {
            let current = self
                .store
                .get(&Self::key(rt, namespace, name))
                .ok_or_else(|| Self::not_found(rt, name))?;
            let mut patched = (*current).clone();
            match patch_type {
                PatchType::Merge => {
                    if !patch.is_object() {
                        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                    }
                    json_patch::merge(&mut patched, &patch);
                }
                PatchType::Json => {
                    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    if ops.0.len() > crate::limits::MAX_JSON_PATCH_OPERATIONS {
                        return Err(ApiError::new(
                            413,
                            "RequestEntityTooLarge",
                            format!(
                                "Request entity too large: The allowed maximum operations in a JSON patch is {}, got {}",
                                crate::limits::MAX_JSON_PATCH_OPERATIONS,
                                ops.0.len()
                            ),
                        ));
                    }
                    // One operation at a time, each bounded in depth where
                    // it wrote: repeated adds cannot build a value so deep
                    // that cloning or dropping it overflows the stack. Only
                    // the value written is walked, not the whole object.
                    for op in ops.0 {
                        let writes = !matches!(
                            op,
                            json_patch::PatchOperation::Remove(_)
                                | json_patch::PatchOperation::Test(_)
                        );
                        let path = op.path().to_string();
                        json_patch::patch(&mut patched, &[op]).map_err(|e| {
                            ApiError::invalid(
                                &rt.kind,
                                name,
                                &[("", format!("the JSON patch could not be applied: {e}"))],
                            )
                        })?;
                        if writes && crate::limits::written_too_deep(&patched, &path) {
                            return Err(crate::limits::too_deep());
                        }
                    }
                }
                PatchType::Strategic => crate::smp::apply(&mut patched, &patch).map_err(|e| {
                    ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
                })?,
                PatchType::Apply => unreachable!("handled above"),
            }
            let mut patched = check_body(rt, patched)?;
            self.validate(rt, &mut patched, opts)?;
            let named_version = patched.pointer("/metadata/resourceVersion")
                != current.pointer("/metadata/resourceVersion");
            if named_version {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &StoreError::Conflict.to_string(),
                ));
            }
            match self.write_update(rt, &current, patched, scope, opts, false) {
                Err(e)
                    if e.reason == "Conflict"
                        && e.message.ends_with(&StoreError::Conflict.to_string()) =>
                {
                    continue;
                }
                other => return other,
            }
        }
        Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "too many concurrent writes; try again",
        ))
    }

    fn apply(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        scope: Scope,
        body: &[u8],
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let Some(manager) = opts.field_manager.as_deref().filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "PatchOptions",
                "",
                &[(
                    "fieldManager",
                    "Required value: is required for apply patch".into(),
                )],
            ));
        };
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("an apply body must be UTF-8"))?;
        let applied: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?
        };
        let mut applied = check_body(rt, applied)?;
        self.validate(rt, &mut applied, opts)?;
        if let Some(n) = applied.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let gv = rt.group_version();
        for _ in 0..RETRIES {
            let now = meta::now_rfc3339();
            let writer = Writer {
                manager,
                api_version: &gv,
                time: &now,
                scope,
                custom: rt.crd.is_some(),
            };
            let current = self.store.get(&Self::key(rt, namespace, name));
            let Some(current) = current else {
                if scope == Scope::StatusOnly {
                    return Err(Self::not_found(rt, name));
                }
                // Apply creates what does not exist.
                let mut object = applied.clone();
                object["metadata"]["name"] = json!(name);
                let mut prepared = self.prepare_create(rt, namespace, object.clone())?;
                // The applier owns what it applied; the defaults the server
                // filled in, and the status it set at creation (a CRD's
                // Established, a Namespace's phase), are nobody's.
                let owned = fields::apply(None, &object, &writer, opts.force)
                    .map_err(|c| conflict_error(rt, name, &c))?;
                match owned.pointer("/metadata/managedFields") {
                    Some(entries) => prepared["metadata"]["managedFields"] = entries.clone(),
                    None => {
                        if let Some(m) = prepared["metadata"].as_object_mut() {
                            m.remove("managedFields");
                        }
                    }
                }
                let object = prepared;
                match self.store_create(rt, namespace, object, opts.dry_run) {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            };
            if let Some(v) = applied
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                && Some(v)
                    != current
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &StoreError::Conflict.to_string(),
                ));
            }
            let merged = fields::apply(Some(&current), &applied, &writer, opts.force)
                .map_err(|c| conflict_error(rt, name, &c))?;
            match self.write_update(rt, &current, merged, scope, opts, true) {
                Err(e)
                    if e.reason == "Conflict"
                        && e.message.ends_with(&StoreError::Conflict.to_string()) =>
                {
                    continue;
                }
                other => return other,
            }
        }
        Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// DELETE: immediate, or pending on finalizers (answered with the
    /// object, now carrying a deletionTimestamp).
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        for _ in 0..RETRIES {
            let key = Self::key(rt, namespace, name);
            let current = self
                .store
                .get(&key)
                .ok_or_else(|| Self::not_found(rt, name))?;
            let uid = current
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(want) = &opts.precondition_uid
                && want != uid
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
            if let Some(want) = &opts.precondition_version
                && Some(want.as_str())
                    != current
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                        current
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    ),
                ));
            }
            let mut pending = (*current).clone();
            match opts.propagation {
                Some(Propagation::Foreground) => add_finalizer(&mut pending, FOREGROUND),
                Some(Propagation::Orphan) => add_finalizer(&mut pending, ORPHAN),
                _ => {}
            }
            let has_finalizers = pending
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
                || blocks_namespace(rt, &pending);
            if !has_finalizers {
                if opts.dry_run {
                    return Ok(success_status(&rt.group, &rt.plural, name, uid));
                }
                match self.store.delete(&key, resource_version(&current)) {
                    Ok(gone) => {
                        self.after_delete(rt, &gone);
                        return Ok(success_status(&rt.group, &rt.plural, name, uid));
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(Self::store_err(rt, name, e)),
                }
            }
            if pending.pointer("/metadata/deletionTimestamp").is_none() {
                let meta = pending["metadata"]
                    .as_object_mut()
                    .expect("stored objects have metadata");
                meta.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                // As kube-apiserver's BeforeDelete: bumped when present,
                // never created.
                if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
                    meta.insert("generation".into(), json!(g + 1));
                }
                if rt.group.is_empty() && rt.kind == "Namespace" {
                    pending["status"]["phase"] = json!("Terminating");
                }
            }
            if pending == *current {
                return Ok((*Self::present(rt, &current)).clone());
            }
            if opts.dry_run {
                return Ok(pending);
            }
            match self.store.update(&key, pending, resource_version(&current)) {
                Ok(stored) => return Ok((*Self::present(rt, &stored)).clone()),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(Self::store_err(rt, name, e)),
            }
        }
        Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "too many concurrent writes; try again",
        ))
    }

    /// DELETE on a collection: deletes every matching object.
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let all = ListOptions {
            limit: None,
            continue_token: None,
            ..list.clone()
        };
        let (items, version, _) = self.list(rt, namespace, &all)?;
        let mut deleted = Vec::new();
        for item in items {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
            match self.delete(rt, ns, name, opts) {
                Ok(_) => deleted.push((*item).clone()),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.group_version(),
            "metadata": {"resourceVersion": version.to_string()},
            "items": deleted,
        }))
    }

    /// Removes one finalizer (the server's own controllers use this),
    /// retrying on concurrent writes. Completes the deletion when it was
    /// the last one.
    pub fn remove_finalizer(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        finalizer: &str,
    ) -> ApiResult<()> {
        self.modify(rt, namespace, name, |o| {
            let mut pointers = vec!["/metadata/finalizers"];
            if finalizer == NAMESPACE_FINALIZER {
                pointers.push("/spec/finalizers");
            }
            let mut changed = false;
            for p in pointers {
                if let Some(f) = o.pointer_mut(p).and_then(Value::as_array_mut) {
                    let before = f.len();
                    f.retain(|x| x != finalizer);
                    changed |= f.len() != before;
                }
            }
            changed
        })
    }

    /// Changes an object on behalf of the server's own controllers
    /// (finalizer removal, dropping owner references), retrying
    /// conflicts. `change` says whether it changed anything.
    pub fn modify(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        change: impl Fn(&mut Value) -> bool,
    ) -> ApiResult<()> {
        for _ in 0..RETRIES {
            let Some(current) = self.store.get(&Self::key(rt, namespace, name)) else {
                return Ok(());
            };
            let mut new = (*current).clone();
            if !change(&mut new) {
                return Ok(());
            }
            let opts = WriteOptions {
                field_manager: Some("flotilla-apiserver".into()),
                ..Default::default()
            };
            match self.write_update(rt, &current, new, Scope::All, &opts, false) {
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) if e.code == 404 => return Ok(()),
                other => return other.map(|_| ()),
            }
        }
        Err(ApiError::conflict(
            &rt.group,
            &rt.plural,
            name,
            "too many concurrent writes",
        ))
    }
}

fn new_with_version(mut new: Value, gone: &Value) -> Value {
    if let Some(v) = gone.pointer("/metadata/resourceVersion") {
        new["metadata"]["resourceVersion"] = v.clone();
    }
    new
}

/// A namespace is held back by its spec finalizers as well.
fn blocks_namespace(rt: &ResourceType, o: &Value) -> bool {
    rt.group.is_empty()
        && rt.kind == "Namespace"
        && o.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

fn scope_of(rt: &ResourceType, status: bool) -> ApiResult<Scope> {
    match (status, rt.status) {
        (true, true) => Ok(Scope::StatusOnly),
        (true, false) => Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({}/status has no status subresource)",
                rt.plural
            ),
        )),
        (false, true) => Ok(Scope::NoStatus),
        (false, false) => Ok(Scope::All),
    }
}

/// The object a write in `scope` produces from `current` and `body`: the
/// main resource keeps the current status, `/status` keeps everything
/// but status.
fn merge_scope(current: &Value, mut body: Value, scope: Scope) -> Value {
    match scope {
        Scope::All => body,
        Scope::NoStatus => {
            let map = body.as_object_mut().expect("checked");
            match current.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
            body
        }
        Scope::StatusOnly => {
            let mut new = current.clone();
            match body.as_object_mut().and_then(|m| m.remove("status")) {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut()
                        .expect("stored objects are maps")
                        .remove("status");
                }
            }
            new
        }
    }
}

/// Did anything outside metadata (and, with a status subresource, status)
/// change? That bumps `metadata.generation`.
/// Whether kube-apiserver's strategy for the kind keeps
/// `metadata.generation`: custom resources and the kinds with a spec do;
/// these (no spec, or a spec whose strategy never counts) do not.
fn has_generation(rt: &ResourceType) -> bool {
    !matches!(
        (rt.group.as_str(), rt.kind.as_str()),
        (
            "",
            "ConfigMap" | "Secret" | "Event" | "ServiceAccount" | "Namespace" | "Endpoints"
        ) | ("events.k8s.io", "Event")
            | ("coordination.k8s.io", "Lease")
            | ("discovery.k8s.io", "EndpointSlice")
            | ("apps", "ControllerRevision")
            | (
                "rbac.authorization.k8s.io",
                "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
            )
    )
}

/// Whether kube-apiserver's strategy for the kind takes a PUT without a
/// resourceVersion as "replace whatever is there": the built-in kinds
/// served here do, but custom resources, CRDs and Leases do not.
fn allows_unconditional_update(rt: &ResourceType) -> bool {
    rt.crd.is_none()
        && !matches!(
            (rt.group.as_str(), rt.kind.as_str()),
            ("apiextensions.k8s.io", "CustomResourceDefinition") | ("coordination.k8s.io", "Lease")
        )
}

/// Whether an update moves `metadata.generation`: anything but metadata
/// and status changed, or, for a Deployment (whose strategy compares them
/// too), its annotations.
fn spec_changed(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    let strip = |o: &Value| -> Map<String, Value> {
        let mut m = o.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if rt.status {
            m.remove("status");
        }
        m
    };
    let annotations = |o: &Value| o.pointer("/metadata/annotations").cloned();
    strip(old) != strip(new)
        || (rt.group == "apps" && rt.kind == "Deployment" && annotations(old) != annotations(new))
}

/// Equal apart from resourceVersion and managed-field timestamps.
fn same_but_version(old: &Value, new: &Value) -> bool {
    let norm = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        o
    };
    let owners = |o: &Value| {
        fields::read_managers(o)
            .into_iter()
            .map(|m| (m.manager, m.operation, m.subresource, m.fields))
            .collect::<Vec<_>>()
    };
    norm(old) == norm(new) && owners(old) == owners(new)
}

/// Checks that a body is an object of this kind, filling in apiVersion
/// and kind when missing.
pub fn check_body(rt: &ResourceType, mut body: Value) -> ApiResult<Value> {
    if crate::limits::exceeds_depth(&body, crate::limits::MAX_OBJECT_DEPTH) {
        return Err(crate::limits::too_deep());
    }
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let gv = rt.group_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(gv));
        }
        Some(v) => {
            let group = v.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            if group != rt.group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({gv})"
                )));
            }
            map.insert("apiVersion".into(), json!(gv));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(rt.kind));
        }
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    match map.get("metadata") {
        None | Some(Value::Null) => {
            map.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    }
    Ok(body)
}

fn validate_metadata_maps(
    rt: &ResourceType,
    name: &str,
    meta: &Map<String, Value>,
) -> ApiResult<()> {
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        name,
                        &[(
                            &format!("metadata.{field}"),
                            format!("Invalid value: the value of {k:?} must be a string"),
                        )],
                    ));
                }
                if field == "labels"
                    && let Some((k, v)) = m.iter().find(|(k, v)| {
                        !valid_label_key(k) || !valid_label_value(v.as_str().unwrap_or_default())
                    })
                {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        name,
                        &[(
                            "metadata.labels",
                            format!(
                                "Invalid value: {k:?}: {v}: a valid label must be 63 characters or less, alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                            ),
                        )],
                    ));
                }
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &rt.kind,
                    name,
                    &[(
                        &format!("metadata.{field}"),
                        "Invalid value: must be a map of strings".into(),
                    )],
                ));
            }
        }
    }
    Ok(())
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(meta::is_dns1123_subdomain) && !name.is_empty() && valid_label_value(name)
}

fn validate_finalizers(rt: &ResourceType, name: &str, f: &[Value]) -> ApiResult<()> {
    for x in f {
        let ok = x.as_str().is_some_and(|s| {
            !s.is_empty()
                && (s.contains('/')
                    || [FOREGROUND, ORPHAN, NAMESPACE_FINALIZER].contains(&s)
                    || s.contains('.'))
        });
        if !ok {
            return Err(ApiError::invalid(
                &rt.kind,
                name,
                &[(
                    "metadata.finalizers",
                    format!(
                        "Invalid value: {x}: name is neither a standard finalizer name nor is it fully qualified"
                    ),
                )],
            ));
        }
    }
    Ok(())
}

pub fn add_finalizer(o: &mut Value, finalizer: &str) {
    let meta = o["metadata"]
        .as_object_mut()
        .expect("objects have metadata");
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
    }
}

fn crd_status(crd: &Value) -> Value {
    let now = meta::now_rfc3339();
    let cond = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage") == Some(&json!(true)))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "storedVersions": stored,
    })
}

fn conflict_error(rt: &ResourceType, name: &str, conflicts: &[fields::Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.owner()),
                "field": c.field(),
            })
        })
        .collect();
    // Worded as kube-apiserver words it: one conflict on one line, several
    // grouped by owner (owners in lexical order), which kubectl explains
    // further.
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.owner(),
            one.field()
        ),
        many => {
            let mut owners: Vec<(&str, &str, String)> = many
                .iter()
                .map(|c| (c.manager.as_str(), c.operation.as_str(), c.owner()))
                .collect();
            owners.sort();
            owners.dedup();
            let mut lines = Vec::new();
            for (_, _, owner) in owners {
                lines.push(format!("conflicts with {owner}:"));
                lines.extend(
                    many.iter()
                        .filter(|c| c.owner() == owner)
                        .map(|c| format!("- {}", c.field())),
                );
            }
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    ApiError::new(409, "Conflict", message)
        .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}))
}

/// The sort order of lists (namespace, then name) as a paging key.
fn sort_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
}

/// `continue` tokens: the list's version and the last key returned,
/// hex-encoded so they are opaque and URL-safe.
fn encode_continue(version: u64, key: &str) -> String {
    let raw = format!("{version}|{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> ApiResult<(u64, String)> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let raw = String::from_utf8(bytes).map_err(|_| bad())?;
    let (v, key) = raw.split_once('|').ok_or_else(bad)?;
    Ok((v.parse().map_err(|_| bad())?, key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "ns/name");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns/name".into()));
        assert!(decode_continue("zz").is_err());
        assert!(decode_continue("abc").is_err());
    }

    #[test]
    fn labels_are_validated() {
        assert!(valid_label_key("app.kubernetes.io/name"));
        assert!(valid_label_key("app"));
        assert!(!valid_label_key("-app"));
        assert!(!valid_label_key("UPPER.example/x") || meta::is_dns1123_subdomain("UPPER.example"));
        assert!(valid_label_value(""));
        assert!(!valid_label_value("a b"));
    }
}
