//! Running a deployment's Helm hooks (which ones, in which order: `hooks.rs`).
//! A hook that fails is recorded in the inventory parent and not run again
//! for that deployment: a failing migration Job is not retried every
//! minute; a new deployment (a commit, `forceSyncGeneration`) runs it again.

use super::*;

/// How a recorded failure reads on the status.
pub(super) fn not_again(why: &str) -> String {
    format!(
        "{why}; it is not run again until the deployment changes (a new commit, or forceSyncGeneration)"
    )
}

/// Runs hooks in order, each waited for; `Ok(Err(why))` when one failed
/// (what follows is not applied). Delete policies are honoured, as Helm
/// does: `hook-succeeded` ones go once every hook of the event succeeded.
pub(super) async fn run_hooks(
    inner: &Inner,
    hooks: &[&hooks::Hook],
    event: hooks::Event,
    parent: &Parent,
    timeout: std::time::Duration,
) -> Result<Result<(), String>, Error> {
    let mut succeeded = Vec::new();
    for hook in hooks {
        let Some(member) = Member::of(&hook.object) else {
            continue;
        };
        let what = format!("{} hook {}", event.as_str(), member.key);
        // One of that name that is not this deployment's (left by a Helm
        // release, say) is not ours to replace.
        if let Some(live) = inner.down.get(&member).await?
            && live
                .pointer("/metadata/labels")
                .and_then(|l| l.get(keys::PART_OF))
                .and_then(Value::as_str)
                != Some(parent.id.as_str())
        {
            return Ok(Err(format!(
                "{what}: an object of that name exists that this deployment did not create; delete it or rename the hook"
            )));
        }
        if hook.delete_before {
            inner.down.delete(&member, &parent.id).await?;
            inner.down.wait_gone(&member, timeout).await?;
        }
        if let Err(e) = inner.down.apply(&hook.object).await {
            return Ok(Err(format!("{what}: {e}")));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = loop {
            let live = inner.down.get(&member).await?;
            match live.as_ref().map(hooks::progress) {
                Some(hooks::Progress::Succeeded) => break Ok(()),
                Some(hooks::Progress::Failed(why)) => break Err(format!("{what} failed: {why}")),
                // Deleted by someone else meanwhile: Helm would say failed.
                None => break Err(format!("{what} disappeared before it finished")),
                Some(hooks::Progress::Running) if tokio::time::Instant::now() >= deadline => {
                    break Err(format!(
                        "{what} did not finish within {}s",
                        timeout.as_secs()
                    ));
                }
                Some(hooks::Progress::Running) => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
        };
        if let Err(e) = outcome {
            if hook.delete_on_failure {
                inner.down.delete(&member, &parent.id).await?;
            }
            tracing::warn!(hook = %member.key, error = %e, "hook failed");
            return Ok(Err(e));
        }
        tracing::info!(hook = %member.key, event = event.as_str(), "hook done");
        if hook.delete_on_success {
            succeeded.push(member);
        }
    }
    for member in succeeded {
        inner.down.delete(&member, &parent.id).await?;
    }
    Ok(Ok(()))
}

/// Once the deployment is Ready: its post hooks, if the parent says they
/// have not run yet for it (and none failed).
pub(super) async fn post_hooks(
    inner: &Inner,
    bd: &BundleDeployment,
    deployed: &Deployed,
    parent: &Parent,
) -> Result<Result<(), String>, Error> {
    let state = read_parent(inner, parent).await?;
    if let Some(why) = state.failed_for(&deployed.deployment_id) {
        return Ok(Err(not_again(why)));
    }
    let Some(pending) = state.post_hooks.as_deref() else {
        return Ok(Ok(()));
    };
    let (id, phase) = pending.split_once(' ').unwrap_or((pending, ""));
    let Some(phase) = Phase::parse(phase).filter(|_| id == deployed.deployment_id) else {
        return Ok(Ok(()));
    };
    let post = hooks::for_event(&deployed.hooks, phase.post());
    if let Err(e) = run_hooks(inner, &post, phase.post(), parent, deployed.hook_timeout).await? {
        let failed = format!("{} {e}", deployed.deployment_id);
        let marks = Marks {
            post_hooks: Some(pending),
            failed_hook: Some(&failed),
        };
        write_parent(inner, bd, parent, &state.members, marks).await?;
        return Ok(Err(not_again(&e)));
    }
    write_parent(inner, bd, parent, &state.members, Marks::default()).await?;
    Ok(Ok(()))
}
