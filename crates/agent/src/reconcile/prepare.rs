//! Rendering a deployment for this cluster, once, kept in memory.

use super::*;

/// What one deployment renders to on this cluster.
pub struct Deployed {
    pub deployment_id: String,
    /// Normalized manifests, labelled for the inventory, in apply order.
    pub desired: Vec<Value>,
    pub members: Inventory,
    /// Helm hooks to run around the apply; not in the inventory.
    pub hooks: Vec<hooks::Hook>,
    /// How long one hook may run (`helm.timeoutSeconds`, else 5 minutes).
    pub hook_timeout: std::time::Duration,
}

pub(super) enum Prepare {
    /// Worth retrying: the Content may not be there yet.
    Retry(String),
    /// `helm.valuesFrom` cannot be read yet (the object or key may come).
    ValuesFrom(String),
    /// Retrying cannot help until the BundleDeployment changes.
    Invalid(String),
}

/// The rendered manifests of the BundleDeployment's deployment, from
/// memory or rendered now.
pub(super) async fn prepare(
    inner: &Inner,
    bd: &BundleDeployment,
    parent: &Parent,
) -> Result<Arc<Deployed>, Prepare> {
    let name = bd.metadata.name.clone().unwrap_or_default();
    if let Some(d) = inner.deployed.lock().expect("deployed lock").get(&name)
        && d.deployment_id == bd.spec.deployment_id
    {
        return Ok(Arc::clone(d));
    }
    if bd.spec.content_id.is_empty() {
        return Err(Prepare::Invalid(
            "spec.contentId is empty: no Content to deploy".into(),
        ));
    }
    let contents: Api<Content> = Api::all(inner.mgmt.clone());
    let content = match contents.get_opt(&bd.spec.content_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(Prepare::Retry(format!(
                "Content {} not found",
                bd.spec.content_id
            )));
        }
        Err(e) => {
            return Err(Prepare::Retry(format!(
                "reading Content: {}",
                api_message(e)
            )));
        }
    };
    let files = BundleContent::from_gzip(&content.spec.content.0)
        .map_err(|e| Prepare::Invalid(format!("Content {}: {e}", bd.spec.content_id)))?;
    // Contents are shared and cluster-scoped: one is deployed only if it
    // holds what its name (the sha256 of its files) says.
    if files.content_id() != bd.spec.content_id {
        return Err(Prepare::Invalid(format!(
            "Content {} does not hold what its name says (its files hash to {}); refusing it",
            bd.spec.content_id,
            files.content_id()
        )));
    }
    let labels = BTreeMap::from([
        (keys::PART_OF.to_owned(), parent.id.clone()),
        (keys::BUNDLE_DEPLOYMENT.to_owned(), name.clone()),
    ]);
    let bundle_name = bd
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::BUNDLE_NAME))
        .cloned()
        .unwrap_or_else(|| name.clone());
    let mut cluster_scoped = inner.down.cluster_scoped();
    let options = crate::values_from::resolve(&inner.down.client, &bd.spec.options)
        .await
        .map_err(Prepare::ValuesFrom)?;
    let tools = inner.config.tools.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        cluster_scoped.extend(
            crd_scopes(&files)
                .into_iter()
                .filter(|(_, c)| *c)
                .map(|(gk, _)| gk),
        );
        render(&RenderInput {
            content: &files,
            options: &options,
            bundle_name: &bundle_name,
            labels: &labels,
            annotations: &BTreeMap::new(),
            cluster_scoped: &cluster_scoped,
            tools: &tools,
        })
        .map(|objs| (objs, crd_scopes(&files)))
    })
    .await
    .map_err(|e| Prepare::Retry(format!("rendering: {e}")))?
    .map_err(|e| Prepare::Invalid(format!("rendering: {e}")))?;
    let (objects, crds) = rendered;
    let mut desired = Vec::with_capacity(objects.len());
    let mut members = BTreeMap::new();
    for mut obj in objects {
        let Some(member) = Member::of(&obj) else {
            return Err(Prepare::Invalid(format!(
                "a manifest without apiVersion, kind or metadata.name: {}",
                crate::drift::describe(&[obj.to_string()])
            )));
        };
        let gk = (member.key.group.clone(), member.key.kind.clone());
        let namespaced = match crds.get(&gk) {
            Some(cluster) => Some(!cluster),
            None => inner
                .down
                .resolve(&gvk_of(&member))
                .await
                .ok()
                .map(|r| r.namespaced),
        };
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("member has metadata");
        match namespaced {
            Some(false) => {
                meta.remove("namespace");
            }
            Some(true) if member.key.namespace.is_empty() => {
                meta.insert("namespace".into(), "default".into());
            }
            _ => {}
        }
        let member = Member::of(&obj).expect("still an object");
        if members.insert(member.key.clone(), member.clone()).is_some() {
            return Err(Prepare::Invalid(format!("{} appears twice", member.key)));
        }
        desired.push(obj);
    }
    let (mut desired, hooks) = hooks::split(desired);
    desired.sort_by_key(|o| Member::of(o).map(|m| phase(&m.key)));
    // Hooks are not members: their delete policy decides their fate.
    let hook_keys: HashSet<ObjKey> = hooks
        .iter()
        .filter_map(|h| Member::of(&h.object))
        .map(|m| m.key)
        .collect();
    let members = Inventory::new(
        members
            .into_values()
            .filter(|m| !hook_keys.contains(&m.key)),
    );
    // The inventory is one ConfigMap: the API server refuses it past 1 MiB.
    let size = members.encode().len();
    if size > flotilla_bundle::limits::MAX_CONFIG_DATA_BYTES - INVENTORY_HEADROOM {
        return Err(Prepare::Invalid(format!(
            "the inventory of {} objects is {size} bytes, over the {} a ConfigMap may hold (less {INVENTORY_HEADROOM} for its metadata); split the bundle",
            desired.len(),
            flotilla_bundle::limits::MAX_CONFIG_DATA_BYTES
        )));
    }
    let hook_timeout = std::time::Duration::from_secs(
        bd.spec
            .options
            .helm
            .as_ref()
            .and_then(|h| h.timeout_seconds)
            .filter(|t| *t > 0)
            .map_or(300, u64::from),
    );
    let deployed = Arc::new(Deployed {
        deployment_id: bd.spec.deployment_id.clone(),
        desired,
        members,
        hooks,
        hook_timeout,
    });
    inner
        .deployed
        .lock()
        .expect("deployed lock")
        .insert(name, Arc::clone(&deployed));
    Ok(deployed)
}

/// Room left in the inventory ConfigMap for its labels and annotations.
pub(super) const INVENTORY_HEADROOM: usize = 16 * 1024;

/// The CRDs a bundle defines: (group, kind) -> cluster-scoped.
pub(super) fn crd_scopes(files: &BundleContent) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for (path, bytes) in &files.files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        if !text.contains("CustomResourceDefinition") {
            continue;
        }
        for doc in flotilla_bundle::yaml::parse_documents(path, text).unwrap_or_default() {
            if doc["kind"] == "CustomResourceDefinition"
                && let (Some(g), Some(k)) = (
                    doc["spec"]["group"].as_str(),
                    doc["spec"]["names"]["kind"].as_str(),
                )
            {
                out.insert(
                    (g.to_owned(), k.to_owned()),
                    doc["spec"]["scope"] == "Cluster",
                );
            }
        }
    }
    out
}
