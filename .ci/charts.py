#!/usr/bin/env python3
"""Validates both Helm charts with the real Helm engine (PyPI package
helm-python-sdk): `helm lint --strict`, then a render with the default
values and one with charts/<chart>/ci/non-default-values.yaml, each checked
for the objects and settings the chart promises."""

import sys
from pathlib import Path

import yaml
from helm_python import Chart, lint

ROOT = Path(__file__).resolve().parent.parent
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def render(chart_dir, values, namespace="flotilla-system"):
    chart = Chart.load(str(chart_dir))
    out = chart.render(values=values, name="flotilla", namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}


def lint_chart(chart_dir, values, label):
    report = lint(str(chart_dir), values, strict=True, namespace="flotilla-system")
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in bad:
        failures.append(f"lint {chart_dir.name}: {m.get('path')}: {m.get('error')}")
    for e in report.get("errors") or []:
        failures.append(f"lint {chart_dir.name}: {e}")
    print(f"lint --strict {chart_dir.name} ({label}): {len(bad)} warnings or errors")


def check_pod_hardening(name, deployment):
    spec = deployment["spec"]["template"]["spec"]
    c = spec["containers"][0]
    pod_sc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation false")
    check("livenessProbe" in c and "readinessProbe" in c, f"{name}: probes")
    check("resources" in c and c["resources"].get("requests"), f"{name}: resources")


def controller_chart():
    chart = ROOT / "charts/flotilla"
    non_default = yaml.safe_load((chart / "ci/non-default-values.yaml").read_text())
    lint_chart(chart, {}, "default values")
    lint_chart(chart, non_default, "non-default values")

    docs = render(chart, {})
    [dep] = by_kind(docs, "Deployment")
    check(dep["spec"]["replicas"] == 2, "flotilla: 2 replicas by default")
    check_pod_hardening("flotilla", dep)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = env_of(c)
    check(env.get("FLOTILLA_LEADER_ELECT") == "true", "flotilla: leader election on")
    check(env.get("FLOTILLA_ALLOW_FILE_REPOS") == "false", "flotilla: local repositories off by default")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    check({"/tmp", "/var/cache/flotilla"} <= mounts, f"flotilla: writable /tmp and git cache ({mounts})")
    check(c["image"].endswith(":0.1.0"), f"flotilla: image tag defaults to appVersion ({c['image']})")
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    check("flotilla-metrics" in services, f"flotilla: a metrics Service ({services})")
    check(not by_kind(docs, "ClusterRoleBinding") == [], "flotilla: RBAC bound")
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role.get("rules", []):
            check("*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []),
                  f"flotilla: no wildcard in {role['metadata']['name']}: {rule}")
            if "secrets" in rule.get("resources", []):
                check(set(rule["verbs"]) <= {"get"}, f"flotilla: Secrets are get-only: {rule}")

    docs = render(chart, non_default)
    [dep] = by_kind(docs, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = env_of(c)
    check(dep["spec"]["replicas"] == 3, "flotilla: replicas from values")
    check(c["image"] == "registry.example.com/platform/flotilla:1.2.3", f"flotilla: image {c['image']}")
    want = {
        "FLOTILLA_GITREPO_WORKERS": "16", "FLOTILLA_HELMOP_WORKERS": "5", "FLOTILLA_FANOUT_WORKERS": "32",
        "FLOTILLA_GC_WORKERS": "24", "FLOTILLA_STATUS_WORKERS": "12",
        "FLOTILLA_AGENT_WORKERS": "6", "FLOTILLA_AGENT_CONTACT_INTERVAL": "1m",
        "FLOTILLA_AGENT_INVENTORY_NAMESPACE": "flotilla-inventory",
        "FLOTILLA_GC_SWEEP_INTERVAL": "30m", "FLOTILLA_LEASE_DURATION": "30s",
        "FLOTILLA_LEASE_RENEW_DEADLINE": "20s", "FLOTILLA_LEASE_RETRY_PERIOD": "5s",
        "FLOTILLA_GIT_TIMEOUT": "2m", "FLOTILLA_LOG": "flotilla_controller=debug",
        "FLOTILLA_GIT_CONNECTIONS": "128", "FLOTILLA_COMPILE_TIMEOUT": "2m",
        "FLOTILLA_CHART_INDEX_TTL": "5m",
        "FLOTILLA_ALLOW_FILE_REPOS": "true",
    }
    for k, v in want.items():
        check(env.get(k) == v, f"flotilla: {k}={env.get(k)!r}, want {v!r}")
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    check("flotilla-webhook" in services, f"flotilla: the webhook Service when a secret is named ({services})")
    print(f"render flotilla: defaults and non-default values ({len(docs)} objects)")


def agent_chart():
    chart = ROOT / "charts/flotilla-agent"
    non_default = yaml.safe_load((chart / "ci/non-default-values.yaml").read_text())
    # The agent needs to know its cluster: the defaults leave that to the
    # user, so lint and render the defaults plus the required identity.
    required = {"cluster": {"name": "c1", "namespace": "cluster-fleet-default-c1-00000000"},
                "management": {"kubeconfig": "apiVersion: v1\nkind: Config\n"}}
    lint_chart(chart, required, "default values plus the cluster's identity")
    lint_chart(chart, non_default, "non-default values")

    docs = render(chart, required)
    [dep] = by_kind(docs, "Deployment")
    check(dep["spec"]["replicas"] == 2, "agent: 2 replicas by default")
    check_pod_hardening("flotilla-agent", dep)
    env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
    check(env.get("FLOTILLA_LEADER_ELECT") == "true", "agent: leader election on")
    check(len(by_kind(docs, "Secret")) == 1, "agent: the management kubeconfig Secret")

    docs = render(chart, non_default)
    [dep] = by_kind(docs, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = env_of(c)
    check(dep["spec"]["replicas"] == 3, "agent: replicas from values")
    check(c["image"] == "registry.example.com/platform/flotilla:1.2.3", f"agent: image {c['image']}")
    for k, v in {"FLOTILLA_AGENT_WORKERS": "8", "FLOTILLA_CRD_TIMEOUT": "2m",
                 "FLOTILLA_LEASE_DURATION": "30s"}.items():
        check(env.get(k) == v, f"agent: {k}={env.get(k)!r}, want {v!r}")
    bindings = by_kind(docs, "ClusterRoleBinding")
    check(any(b["roleRef"]["name"] == "flotilla-deployer" for b in bindings),
          "agent: downstreamClusterRole from values")

    rbac_only = dict(non_default)
    rbac_only["management"] = dict(non_default["management"], rbacOnly=True)
    docs = render(chart, rbac_only, namespace="cluster-fleet-prod-prod-eu-0123abcd")
    kinds = sorted({d["kind"] for d in docs})
    check("Deployment" not in kinds, f"agent rbacOnly: no Deployment ({kinds})")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    bd_role = roles.get("cluster-fleet-prod-prod-eu-0123abcd")
    check(bd_role is not None and any("bundledeployments" in r["resources"] for r in bd_role["rules"]),
          f"agent rbacOnly: the BundleDeployment Role is in the cluster namespace ({list(roles)})")
    contact = roles.get("fleet-prod")
    check(contact is not None and all(set(r["verbs"]) <= {"patch", "get"} for r in contact["rules"]),
          f"agent rbacOnly: only the Cluster's status in the workspace ({list(roles)})")
    print("render flotilla-agent: defaults, non-default values and rbacOnly")


controller_chart()
agent_chart()
if failures:
    print("chart validation failed:", file=sys.stderr)
    for f in failures:
        print(f"  - {f}", file=sys.stderr)
    sys.exit(1)
print("charts: ok")
