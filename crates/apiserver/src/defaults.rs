//! Defaults of the built-in kinds, as a real API server fills them in on
//! every write: what clients (kubectl describe, rollout status, Helm,
//! controllers) read back without having set it.
//!
//! Only absent fields are filled, so applying defaults twice changes
//! nothing and a write that only re-states them is a no-op.

use serde_json::{Map, Value, json};

/// Fills the defaults of `object`, a `kind` of `group`. `old` is the
/// stored object on an update: server-allocated values (a Service's
/// cluster IP and node ports) are kept from it rather than allocated anew.
pub fn apply(group: &str, kind: &str, object: &mut Value, old: Option<&Value>) {
    let Some(o) = object.as_object_mut() else {
        return;
    };
    match (group, kind) {
        ("", "Namespace") => {
            // As kube-apiserver's namespace strategy does on every write:
            // the label always names the namespace.
            let name = o
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let meta = map_at(o, "metadata");
            map_at(meta, "labels").insert(NAMESPACE_NAME_LABEL.into(), json!(name));
        }
        ("", "Secret") => {
            o.entry("type").or_insert(json!("Opaque"));
        }
        ("", "Service") => service(spec(o), old.and_then(|o| o.get("spec"))),
        ("apps", "Deployment") => {
            let s = spec(o);
            s.entry("replicas").or_insert(json!(1));
            s.entry("revisionHistoryLimit").or_insert(json!(10));
            s.entry("progressDeadlineSeconds").or_insert(json!(600));
            let strategy = map_at(s, "strategy");
            strategy.entry("type").or_insert(json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = map_at(strategy, "rollingUpdate");
                ru.entry("maxUnavailable").or_insert(json!("25%"));
                ru.entry("maxSurge").or_insert(json!("25%"));
            }
            pod_template(s, "Always");
        }
        ("apps", "StatefulSet") => {
            let s = spec(o);
            s.entry("replicas").or_insert(json!(1));
            s.entry("revisionHistoryLimit").or_insert(json!(10));
            s.entry("podManagementPolicy")
                .or_insert(json!("OrderedReady"));
            let strategy = map_at(s, "updateStrategy");
            strategy.entry("type").or_insert(json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                map_at(strategy, "rollingUpdate")
                    .entry("partition")
                    .or_insert(json!(0));
            }
            let retention = map_at(s, "persistentVolumeClaimRetentionPolicy");
            retention.entry("whenDeleted").or_insert(json!("Retain"));
            retention.entry("whenScaled").or_insert(json!("Retain"));
            pod_template(s, "Always");
        }
        ("apps", "DaemonSet") => {
            let s = spec(o);
            s.entry("revisionHistoryLimit").or_insert(json!(10));
            let strategy = map_at(s, "updateStrategy");
            strategy.entry("type").or_insert(json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = map_at(strategy, "rollingUpdate");
                ru.entry("maxUnavailable").or_insert(json!(1));
                ru.entry("maxSurge").or_insert(json!(0));
            }
            pod_template(s, "Always");
        }
        ("batch", "Job") => {
            // A Job without labels takes its pod template's.
            let template_labels = o
                .get("spec")
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            let meta = map_at(o, "metadata");
            let unlabeled = meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if let (Some(labels), true) = (template_labels, unlabeled) {
                meta.insert("labels".into(), labels);
            }
            let s = spec(o);
            s.entry("parallelism").or_insert(json!(1));
            s.entry("backoffLimit").or_insert(json!(6));
            s.entry("completionMode").or_insert(json!("NonIndexed"));
            s.entry("suspend").or_insert(json!(false));
            if !s.contains_key("completions") {
                s.insert("completions".into(), json!(1));
            }
            // A Job's pods must not restart in place; the API requires
            // Never or OnFailure, so nothing is defaulted there.
            pod_template(s, "");
        }
        _ => {}
    }
}

/// The label kube-apiserver keeps on every Namespace, naming it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A new Job's generated selector, as kube-apiserver's Job strategy makes
/// it unless `spec.manualSelector` is true: the pod template is labelled
/// with the Job's name and uid (in the legacy and the `batch.kubernetes.io/`
/// forms, leaving labels the user set alone), and the selector matches the
/// uid.
pub fn job_selector(object: &mut Value) {
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or_default();
    let uid = object.pointer("/metadata/uid").cloned().unwrap_or_default();
    let Some(o) = object.as_object_mut() else {
        return;
    };
    let s = spec(o);
    if s.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let template_meta = map_at(map_at(s, "template"), "metadata");
    let labels = map_at(template_meta, "labels");
    for key in ["job-name", "batch.kubernetes.io/job-name"] {
        labels.entry(key).or_insert(name.clone());
    }
    for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
        labels.entry(key).or_insert(uid.clone());
    }
    map_at(map_at(s, "selector"), "matchLabels")
        .entry("batch.kubernetes.io/controller-uid")
        .or_insert(uid);
}

fn spec(o: &mut Map<String, Value>) -> &mut Map<String, Value> {
    map_at(o, "spec")
}

/// The map at `key`, created (or replacing a non-map) when absent.
fn map_at<'a>(o: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = o.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("a map")
}

fn pod_template(workload: &mut Map<String, Value>, restart_policy: &str) {
    let Some(pod) = workload
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if !restart_policy.is_empty() {
        pod.entry("restartPolicy").or_insert(json!(restart_policy));
    }
    pod.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    pod.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    pod.entry("securityContext").or_insert(json!({}));
    pod.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = pod.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    // `Always` for :latest or no tag, as the API server decides.
    let tag = image
        .rsplit_once('/')
        .map_or(image, |(_, last)| last)
        .split_once(':')
        .map(|(_, t)| t);
    let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent"
    } else {
        "Always"
    };
    c.entry("imagePullPolicy").or_insert(json!(policy));
    c.entry("terminationMessagePath")
        .or_insert(json!("/dev/termination-log"));
    c.entry("terminationMessagePolicy").or_insert(json!("File"));
    c.entry("resources").or_insert(json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            p.entry("timeoutSeconds").or_insert(json!(1));
            p.entry("periodSeconds").or_insert(json!(10));
            p.entry("successThreshold").or_insert(json!(1));
            p.entry("failureThreshold").or_insert(json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                h.entry("scheme").or_insert(json!("HTTP"));
            }
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut() {
            if let Some(f) = e
                .pointer_mut("/valueFrom/fieldRef")
                .and_then(Value::as_object_mut)
            {
                f.entry("apiVersion").or_insert(json!("v1"));
            }
        }
    }
}

fn service(s: &mut Map<String, Value>, old: Option<&Value>) {
    s.entry("type").or_insert(json!("ClusterIP"));
    let kind = s["type"].as_str().unwrap_or("ClusterIP").to_owned();
    if kind == "ExternalName" {
        return;
    }
    s.entry("sessionAffinity").or_insert(json!("None"));
    s.entry("internalTrafficPolicy").or_insert(json!("Cluster"));
    if kind == "NodePort" || kind == "LoadBalancer" {
        s.entry("externalTrafficPolicy").or_insert(json!("Cluster"));
    }
    // The cluster IP: kept from the stored object, else allocated.
    if !s.contains_key("clusterIP") {
        let ip = old
            .and_then(|o| o.get("clusterIP"))
            .cloned()
            .unwrap_or_else(|| {
                let n = crate::meta::random_u64();
                json!(format!("10.96.{}.{}", (n >> 8) % 256, 1 + n % 254))
            });
        s.insert("clusterIP".into(), ip);
    }
    let ip = s["clusterIP"].clone();
    if ip != "None" {
        s.entry("clusterIPs").or_insert_with(|| json!([ip]));
    }
    s.entry("ipFamilies").or_insert(json!(["IPv4"]));
    s.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    let old_ports: Vec<Value> = old
        .and_then(|o| o.get("ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Array(ports)) = s.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
            if (kind == "NodePort" || kind == "LoadBalancer") && !p.contains_key("nodePort") {
                let kept = old_ports
                    .iter()
                    .find(|o| o.get("port") == p.get("port"))
                    .and_then(|o| o.get("nodePort"))
                    .cloned();
                let node_port =
                    kept.unwrap_or_else(|| json!(30000 + crate::meta::random_u64() % 2768));
                p.insert("nodePort".into(), node_port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, mut o: Value) -> Value {
        apply(group, kind, &mut o, None);
        o
    }

    #[test]
    fn deployments_get_what_rollout_status_and_describe_read() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "busybox"}
            ]}}}}),
        );
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let pod = &s["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "Always");
        // Idempotent, and explicit values win.
        assert_eq!(defaulted("apps", "Deployment", d.clone()), d);
        let recreate = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(recreate["spec"]["replicas"], 3);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn services_get_a_type_affinity_ports_and_a_stable_cluster_ip() {
        let svc = defaulted(
            "",
            "Service",
            json!({"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        );
        let s = &svc["spec"];
        assert_eq!(s["type"], "ClusterIP");
        assert_eq!(s["sessionAffinity"], "None");
        assert_eq!(
            s["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        let ip = s["clusterIP"].as_str().unwrap().to_owned();
        assert!(ip.starts_with("10.96."), "{ip}");
        assert_eq!(s["clusterIPs"], json!([ip]));
        // An update that omits the IP keeps the stored one.
        let mut update = json!({"spec": {"ports": [{"port": 80}], "type": "NodePort"}});
        apply("", "Service", &mut update, Some(&svc));
        assert_eq!(update["spec"]["clusterIP"], ip.as_str());
        let node_port = update["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..32768).contains(&node_port));
        let ext = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        assert!(ext["spec"].get("clusterIP").is_none());
    }

    #[test]
    fn secrets_statefulsets_daemonsets_and_jobs() {
        assert_eq!(defaulted("", "Secret", json!({}))["type"], "Opaque");
        let sts = defaulted("apps", "StatefulSet", json!({"spec": {}}));
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            0
        );
        let ds = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
        let job = defaulted(
            "batch",
            "Job",
            json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}}),
        );
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(
            defaulted("", "ConfigMap", json!({"data": {}})),
            json!({"data": {}})
        );
    }

    #[test]
    fn namespaces_are_labelled_with_their_name_always() {
        let ns = defaulted(
            "",
            "Namespace",
            json!({"metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "other", "team": "a"}}}),
        );
        assert_eq!(
            ns["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "shop", "team": "a"})
        );
    }

    #[test]
    fn jobs_take_template_labels_and_a_generated_selector() {
        let mut job = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "migrate", "uid": "u-1"},
                   "spec": {"template": {"metadata": {"labels": {"app": "db"}}, "spec": {}}}}),
        );
        job_selector(&mut job);
        assert_eq!(job["metadata"]["labels"], json!({"app": "db"}));
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"app": "db", "job-name": "migrate", "batch.kubernetes.io/job-name": "migrate",
                   "controller-uid": "u-1", "batch.kubernetes.io/controller-uid": "u-1"})
        );
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        // With a manual selector nothing is generated.
        let mut manual = json!({"metadata": {"name": "m", "uid": "u"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"x": "y"}}, "template": {}}});
        job_selector(&mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"x": "y"}})
        );
        assert!(manual.pointer("/spec/template/metadata").is_none());
    }
}
