//! The hub's events for what makes Bundles: GitRepos and HelmOps, their
//! Bundles as their owners see them, and the Contents those need.
//!
//! | event | owner's controller | status | gc |
//! |---|---|---|---|
//! | GitRepo or HelmOp created, generation changed, deleting | itself | itself, when created | |
//! | GitRepo webhook annotation moved | itself | | |
//! | GitRepo or HelmOp gone (even without its finalizer) | itself (it forgets) | | its Bundles, if orphaned |
//! | Bundle it wants deleted or edited by someone else | its owner | | |
//! | a Bundle of a deleting owner changed or gone | its owner | | |
//! | Bundle's owner label changed | | both owners | |
//! | Content in use deleted | the owners of the Bundles using it | | |

use super::{Hub, deleting};
use crate::bundles::{OwnerKey, OwnerKind};
use crate::cache::Delta;
use crate::{GcKey, ObjectKey, StatusKey};
use flotilla_api::{Bundle, Content, GitRepo, HelmOp, keys};
use kube::core::PartialObjectMeta;
use std::collections::BTreeSet;

impl Hub {
    /// Queues an owner's controller.
    pub(super) fn owner(&self, owner: OwnerKey, trigger: &'static str) {
        match owner.kind {
            OwnerKind::GitRepo => self.ctx.gitrepo.add(owner.key, trigger),
            OwnerKind::HelmOp => self.ctx.helmop.add(owner.key, trigger),
        }
    }

    fn owner_status(&self, owner: OwnerKey, trigger: &'static str) {
        match owner.kind {
            OwnerKind::GitRepo => self.status(StatusKey::GitRepo(owner.key), trigger),
            OwnerKind::HelmOp => self.status(StatusKey::HelmOp(owner.key), trigger),
        }
    }

    fn owner_deleting(&self, owner: &OwnerKey) -> bool {
        match owner.kind {
            OwnerKind::GitRepo => self
                .ctx
                .gitrepos
                .get(&owner.key)
                .is_some_and(|r| deleting(&*r)),
            OwnerKind::HelmOp => self
                .ctx
                .helmops
                .get(&owner.key)
                .is_some_and(|r| deleting(&*r)),
        }
    }

    pub(super) fn on_gitrepo(&mut self, delta: Delta<GitRepo>) {
        match delta {
            Delta::Upsert { old, new } => {
                let key = ObjectKey::of(&new.metadata);
                let webhook = |r: &GitRepo| {
                    r.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(keys::WEBHOOK_COMMIT).cloned())
                };
                if old.as_ref().is_some_and(|o| {
                    synced(o.status.as_ref().map(|s| &s.conditions[..]))
                        != synced(new.status.as_ref().map(|s| &s.conditions[..]))
                }) {
                    // Its controller synced (or failed to): Ready follows.
                    self.status(StatusKey::GitRepo(key.clone()), "gitrepo-synced");
                }
                let trigger = match &old {
                    None => {
                        self.status(StatusKey::GitRepo(key.clone()), "gitrepo");
                        Some("gitrepo")
                    }
                    Some(o) if deleting(&*new) && !deleting(&**o) => Some("gitrepo-deleting"),
                    Some(o) if o.metadata.generation != new.metadata.generation => Some("gitrepo"),
                    Some(o) if webhook(o) != webhook(&new) => {
                        if let Some(st) = self.ctx.git.repos().get_mut(&key) {
                            st.poke = true;
                        }
                        Some("webhook")
                    }
                    // Status, finalizer and label changes: nothing to do.
                    Some(_) => None,
                };
                if let Some(trigger) = trigger {
                    self.ctx.gitrepo.add(key, trigger);
                }
            }
            // The reconcile finds it gone and forgets it. Its Bundles are
            // orphans if it went without its finalizer (removed by hand).
            Delta::Removed(old) => {
                let key = ObjectKey::of(&old.metadata);
                for b in self
                    .ctx
                    .topo()
                    .bundles_by_repo
                    .get(&key)
                    .into_iter()
                    .flatten()
                {
                    self.gc(GcKey::Bundle(b.clone()), "gitrepo-deleted");
                }
                self.ctx.gitrepo.add(key, "gitrepo-deleted");
            }
        }
    }

    pub(super) fn on_helmop(&mut self, delta: Delta<HelmOp>) {
        match delta {
            Delta::Upsert { old, new } => {
                let key = ObjectKey::of(&new.metadata);
                if old.as_ref().is_some_and(|o| {
                    synced(o.status.as_ref().map(|s| &s.conditions[..]))
                        != synced(new.status.as_ref().map(|s| &s.conditions[..]))
                }) {
                    self.status(StatusKey::HelmOp(key.clone()), "helmop-synced");
                }
                let trigger = match &old {
                    None => {
                        self.status(StatusKey::HelmOp(key.clone()), "helmop");
                        Some("helmop")
                    }
                    Some(o) if deleting(&*new) && !deleting(&**o) => Some("helmop-deleting"),
                    Some(o) if o.metadata.generation != new.metadata.generation => Some("helmop"),
                    Some(_) => None,
                };
                if let Some(trigger) = trigger {
                    self.ctx.helmop.add(key, trigger);
                }
            }
            // Its Bundle has its name; an orphan if it went without its
            // finalizer.
            Delta::Removed(old) => {
                let key = ObjectKey::of(&old.metadata);
                self.gc(GcKey::Bundle(key.clone()), "helmop-deleted");
                self.ctx.helmop.add(key, "helmop-deleted");
            }
        }
    }

    /// A Content deleted by someone else: the owners of the Bundles using
    /// it write it again. (Creations need nothing.)
    pub(super) fn on_content(&mut self, delta: Delta<PartialObjectMeta<Content>>) {
        let Delta::Removed(old) = delta else {
            return;
        };
        let Some(name) = old.metadata.name.as_deref() else {
            return;
        };
        let owners: BTreeSet<OwnerKey> = self
            .ctx
            .bundles
            .list()
            .iter()
            .filter(|b| b.spec.content_id == name && !deleting(&***b))
            .filter_map(|b| OwnerKind::of_bundle(b))
            .collect();
        for o in owners {
            tracing::warn!(content = %name, owner = %o, "a Content in use was deleted; writing it again");
            self.owner(o, "content-deleted");
        }
    }

    /// A Bundle event that concerns its owner: someone else deleted or
    /// edited a Bundle it wants, or the last Bundle of a deleting owner
    /// went away. Its own writes match what it wants and wake nothing.
    pub(super) fn bundle_for_owner(
        &mut self,
        key: &ObjectKey,
        old: Option<&Bundle>,
        new: Option<&Bundle>,
    ) {
        let Some(owner) = new.or(old).and_then(OwnerKind::of_bundle) else {
            return;
        };
        // A deleting owner waits for its Bundles to go: each event of one
        // (even one it had not seen yet) wakes its finalizer.
        if self.owner_deleting(&owner) {
            let gone = new.is_none_or(deleting);
            self.owner(owner, if gone { "bundle-deleted" } else { "bundle" });
            return;
        }
        let Some((owner, want)) = self.ctx.git.desired_of(key) else {
            return;
        };
        let drifted = match new {
            None => true,
            Some(b) if deleting(b) => !old.is_some_and(deleting),
            Some(b) => b.spec != *want && old.is_none_or(|o| o.spec != b.spec),
        };
        if drifted {
            self.owner(owner, "bundle-changed");
        }
    }

    /// Keeps `bundles_by_repo` current, and the owners' status when a
    /// Bundle joins or leaves them.
    pub(super) fn track_owner(
        &mut self,
        key: &ObjectKey,
        old: Option<&Bundle>,
        new: Option<&Bundle>,
    ) {
        let (before, after) = (
            old.and_then(OwnerKind::of_bundle),
            new.and_then(OwnerKind::of_bundle),
        );
        if before == after && new.is_some() {
            return;
        }
        let repo = |o: &Option<OwnerKey>| {
            o.as_ref()
                .filter(|o| o.kind == OwnerKind::GitRepo)
                .map(|o| o.key.clone())
        };
        let mut topo = self.ctx.topo.write().expect("topology lock");
        if let Some(r) = repo(&before)
            && let Some(set) = topo.bundles_by_repo.get_mut(&r)
        {
            set.remove(key);
            if set.is_empty() {
                topo.bundles_by_repo.remove(&r);
            }
        }
        if let Some(r) = repo(&after) {
            topo.bundles_by_repo
                .entry(r)
                .or_default()
                .insert(key.clone());
        }
        drop(topo);
        for o in before.into_iter().chain(after) {
            self.owner_status(o, "bundle");
        }
    }

    /// A bundle's status and its owner's.
    pub(super) fn bundle_status(&self, bundle: &ObjectKey, trigger: &'static str) {
        self.status(StatusKey::Bundle(bundle.clone()), trigger);
        if let Some(owner) = self
            .ctx
            .bundles
            .get(bundle)
            .and_then(|b| OwnerKind::of_bundle(&b))
        {
            self.owner_status(owner, trigger);
        }
    }
}

/// An owner's `Synced` condition, as far as Ready depends on it.
fn synced(
    conditions: Option<&[flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> Option<(&str, &str, &str)> {
    conditions?
        .iter()
        .find(|c| c.type_ == flotilla_api::condition::SYNCED)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}
