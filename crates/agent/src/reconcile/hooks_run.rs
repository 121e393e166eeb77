//! Running a deployment's Helm hooks (which ones, in which order: `hooks.rs`).

use super::*;

/// Runs hooks in order, each waited for; `Ok(Err(why))` when one failed
/// (what follows is not applied). Delete policies are honoured.
pub(super) async fn run_hooks(
    inner: &Inner,
    hooks: &[&hooks::Hook],
    event: hooks::Event,
    parent: &Parent,
    timeout: std::time::Duration,
) -> Result<Result<(), String>, Error> {
    for hook in hooks {
        let Some(member) = Member::of(&hook.object) else {
            continue;
        };
        let what = format!("{} hook {}", event.as_str(), member.key);
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
        match &outcome {
            Ok(()) if hook.delete_on_success => inner.down.delete(&member, &parent.id).await?,
            Err(_) if hook.delete_on_failure => inner.down.delete(&member, &parent.id).await?,
            _ => {}
        }
        if let Err(e) = outcome {
            tracing::warn!(hook = %member.key, error = %e, "hook failed");
            return Ok(Err(e));
        }
        tracing::info!(hook = %member.key, event = event.as_str(), "hook done");
    }
    Ok(Ok(()))
}

/// Once the deployment is Ready: its post hooks, if the parent says they
/// have not run yet for it.
pub(super) async fn post_hooks(
    inner: &Inner,
    bd: &BundleDeployment,
    deployed: &Deployed,
    parent: &Parent,
) -> Result<Result<(), String>, Error> {
    let state = read_parent(inner, parent).await?;
    let Some(pending) = state.post_hooks.as_deref() else {
        return Ok(Ok(()));
    };
    let (id, phase) = pending.split_once(' ').unwrap_or((pending, ""));
    let Some(phase) = Phase::parse(phase).filter(|_| id == deployed.deployment_id) else {
        return Ok(Ok(()));
    };
    let post = hooks::for_event(&deployed.hooks, phase.post());
    if let Err(e) = run_hooks(inner, &post, phase.post(), parent, deployed.hook_timeout).await? {
        return Ok(Err(e));
    }
    write_parent(inner, bd, parent, &state.members, None).await?;
    Ok(Ok(()))
}
