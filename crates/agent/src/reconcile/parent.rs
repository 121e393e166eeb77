//! The inventory parent of a BundleDeployment: the ConfigMap downstream
//! that records its members (an ApplySet) and its pending post hooks.

use super::*;

/// The annotation of the inventory parent that holds a deployment's
/// post hooks until they ran: `<deploymentID> install|upgrade`.
pub(super) const POST_HOOKS: &str = "flotilla.dev/post-hooks";

/// The inventory parent of a BundleDeployment.
pub(super) struct Parent {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) id: String,
}

impl Parent {
    pub(super) fn of(inner: &Inner, bd_name: &str) -> Parent {
        let namespace = inner.config.inventory_namespace.clone();
        let name = format!("flotilla-{bd_name}");
        let id = applyset_id(&name, &namespace);
        Parent {
            namespace,
            name,
            id,
        }
    }
}

/// What the inventory parent records.
pub(super) struct ParentState {
    pub(super) members: Inventory,
    /// Post hooks not run yet: `<deploymentID> <phase>`.
    pub(super) post_hooks: Option<String>,
}

pub(super) async fn read_parent(inner: &Inner, parent: &Parent) -> Result<ParentState, Error> {
    let Some(cm) = inner
        .down
        .get_parent(&parent.namespace, &parent.name)
        .await?
    else {
        return Ok(ParentState {
            members: Inventory::default(),
            post_hooks: None,
        });
    };
    let post_hooks = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POST_HOOKS))
        .cloned();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("members"))
        .map(String::as_str)
        .unwrap_or("[]");
    let members = Inventory::decode(text).map_err(|e| {
        Error::Failed(format!(
            "inventory {}/{}: {e}",
            parent.namespace, parent.name
        ))
    })?;
    Ok(ParentState {
        members,
        post_hooks,
    })
}

pub(super) async fn write_parent(
    inner: &Inner,
    bd: &BundleDeployment,
    parent: &Parent,
    members: &Inventory,
    post_hooks: Option<&str>,
) -> Result<(), Error> {
    let additional: BTreeSet<&str> = members
        .members
        .keys()
        .map(|k| k.namespace.as_str())
        .filter(|ns| !ns.is_empty() && *ns != parent.namespace)
        .collect();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(parent.name.clone()),
            namespace: Some(parent.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("applyset.kubernetes.io/id".to_owned(), parent.id.clone()),
                (
                    keys::MANAGED_BY.to_owned(),
                    keys::MANAGED_BY_VALUE.to_owned(),
                ),
            ])),
            annotations: Some(
                BTreeMap::from([
                    (
                        "applyset.kubernetes.io/tooling".to_owned(),
                        format!("flotilla/v{}", env!("CARGO_PKG_VERSION")),
                    ),
                    (
                        "applyset.kubernetes.io/contains-group-kinds".to_owned(),
                        members.group_kinds(),
                    ),
                    (
                        "applyset.kubernetes.io/additional-namespaces".to_owned(),
                        additional.into_iter().collect::<Vec<_>>().join(","),
                    ),
                    (
                        keys::BUNDLE_DEPLOYMENT.to_owned(),
                        format!(
                            "{}/{}",
                            inner.config.cluster_namespace,
                            bd.metadata.name.as_deref().unwrap_or_default()
                        ),
                    ),
                ])
                .into_iter()
                .chain(post_hooks.map(|p| (POST_HOOKS.to_owned(), p.to_owned())))
                .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("members".to_owned(), members.encode())])),
        ..Default::default()
    };
    inner.down.apply_parent(&cm).await
}
