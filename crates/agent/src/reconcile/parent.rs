//! The inventory parent of a BundleDeployment: the ConfigMap downstream
//! that records its members (an ApplySet) and its pending post hooks.

use super::*;

/// The annotation of the inventory parent that holds a deployment's
/// post hooks until they ran: `<deploymentID> install|upgrade`.
pub(super) const POST_HOOKS: &str = "flotilla.dev/post-hooks";
/// The annotation of the inventory parent that records a hook that failed
/// (`<deploymentID> <why>`): it is not run again for that deployment.
pub(super) const FAILED_HOOK: &str = "flotilla.dev/failed-hook";

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
    /// Whether it exists: a deployment was installed here before.
    pub(super) exists: bool,
    pub(super) members: Inventory,
    /// Post hooks not run yet: `<deploymentID> <phase>`.
    pub(super) post_hooks: Option<String>,
    /// A hook that failed: `<deploymentID> <why>`.
    pub(super) failed_hook: Option<String>,
}

impl ParentState {
    /// Why a hook of deployment `id` failed, if one did.
    pub(super) fn failed_for(&self, id: &str) -> Option<&str> {
        self.failed_hook
            .as_deref()?
            .strip_prefix(id)?
            .strip_prefix(' ')
    }
}

/// The hook marks the parent carries beside its members.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Marks<'a> {
    pub(super) post_hooks: Option<&'a str>,
    pub(super) failed_hook: Option<&'a str>,
}

pub(super) async fn read_parent(inner: &Inner, parent: &Parent) -> Result<ParentState, Error> {
    let Some(cm) = inner
        .down
        .get_parent(&parent.namespace, &parent.name)
        .await?
    else {
        return Ok(ParentState {
            exists: false,
            members: Inventory::default(),
            post_hooks: None,
            failed_hook: None,
        });
    };
    let annotation = |k: &str| {
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    let (post_hooks, failed_hook) = (annotation(POST_HOOKS), annotation(FAILED_HOOK));
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
        exists: true,
        members,
        post_hooks,
        failed_hook,
    })
}

pub(super) async fn write_parent(
    inner: &Inner,
    bd: &BundleDeployment,
    parent: &Parent,
    members: &Inventory,
    marks: Marks<'_>,
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
                .chain(
                    marks
                        .post_hooks
                        .map(|p| (POST_HOOKS.to_owned(), p.to_owned())),
                )
                .chain(marks.failed_hook.map(|f| {
                    (
                        FAILED_HOOK.to_owned(),
                        flotilla_api::summary::truncate(f, 1024),
                    )
                }))
                .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("members".to_owned(), members.encode())])),
        ..Default::default()
    };
    inner.down.apply_parent(&cm).await
}
