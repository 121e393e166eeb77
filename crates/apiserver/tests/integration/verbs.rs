//! Every verb and rule, through kube-rs in process.

use crate::support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn discovery_lists_builtins_and_crds() {
    let (_s, client) = setup().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    let widgets_before = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    for (group, kind) in [
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "Service"),
        ("", "Event"),
        ("", "Namespace"),
        ("events.k8s.io", "Event"),
        ("coordination.k8s.io", "Lease"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ] {
        let found = widgets_before
            .groups()
            .flat_map(|g| g.recommended_resources())
            .any(|(r, _)| r.group == group && r.kind == kind);
        assert!(found, "{group}/{kind} is discoverable");
    }
    widgets(&client).await;
    let after = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let (ar, caps) = after
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "Widget")
        .expect("a CRD is served as soon as it is created");
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources.iter().any(|(s, _)| s.plural == "status"),
        "the status subresource is discoverable"
    );
    for path in [
        "/healthz",
        "/readyz",
        "/api",
        "/apis",
        "/api/v1",
        "/apis/apps/v1",
    ] {
        let (code, _) = raw(&client, "GET", path, &[], vec![]).await;
        assert_eq!(code, 200, "{path}");
    }
}

#[tokio::test]
async fn create_get_update_delete_with_server_metadata() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.uid.as_ref().unwrap().len(), 36);
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, None, "a ConfigMap has no generation");
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let rv1: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();

    // generateName
    let mut generated = cm("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // Versions increase strictly, and a stale update conflicts.
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    let stale = api.replace("a", &PostParams::default(), &changed).await;
    let e = api_err(stale);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    // An update that changes nothing writes nothing.
    let same = api
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        updated.metadata.resource_version
    );

    let e = api_err(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let e = api_err(api.get("a").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    let e = api_err(api.delete("a", &DeleteParams::default()).await);
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn generation_only_for_kinds_whose_strategy_keeps_it() {
    let (_s, client) = setup().await;
    // A ConfigMap never gets one: not on create, update, or deletion with a
    // finalizer pending.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut c = cm("held", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let created = cms.create(&PostParams::default(), &c).await.unwrap();
    assert_eq!(created.metadata.generation, None);
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = cms
        .replace("held", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, None);
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = cms.get("held").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(
        pending.metadata.generation, None,
        "deletion does not create it"
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();

    // A Deployment's annotations count, as its strategy compares them.
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}
            }
        }
    }))
    .unwrap();
    let created = deploys.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let labelled = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1), "labels do not count");
    let annotated = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"x": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(annotated.metadata.generation, Some(2));
}

#[tokio::test]
async fn errors_are_status_objects_with_reasons() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let e = api_err(
        api.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(e.message.contains("metadata.name"), "{}", e.message);
    let e = api_err(
        api.create(&PostParams::default(), &cm("x", json!({"bad key!": "v"})))
            .await,
    );
    assert_eq!(e.reason, "Invalid");
    let e = api_err(api.list(&ListParams::default().labels("a in (")).await);
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    let e = api_err(api.list(&ListParams::default().fields("spec.nope=1")).await);
    assert_eq!(e.code, 400);
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    let e = api_err(
        other
            .create(&PostParams::default(), &cm("x", json!({})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));

    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps/x",
        &[],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/vnd.kubernetes.protobuf")],
        vec![0x6b, 0x38],
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (400, Some("BadRequest")),
        "a damaged protobuf body: {body}"
    );
    assert_eq!(body["kind"], "Status");
    let (code, _) = raw(&client, "GET", "/apis/nope.example/v1/things", &[], vec![]).await;
    assert_eq!(code, 404);
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/json")],
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn list_filters_by_labels_and_fields_and_pages() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..25 {
        let tier = if i % 2 == 0 { "web" } else { "db" };
        let labels = if i % 5 == 0 {
            json!({"tier": tier, "canary": "yes"})
        } else {
            json!({"tier": tier})
        };
        api.create(&PostParams::default(), &cm(&format!("cm-{i:02}"), labels))
            .await
            .unwrap();
    }
    let count = |lp: ListParams| {
        let api = api.clone();
        async move { api.list(&lp).await.unwrap().items.len() }
    };
    assert_eq!(count(ListParams::default()).await, 25);
    assert_eq!(count(ListParams::default().labels("tier=web")).await, 13);
    assert_eq!(count(ListParams::default().labels("tier!=web")).await, 12);
    assert_eq!(
        count(ListParams::default().labels("tier in (web,db),canary")).await,
        5
    );
    assert_eq!(
        count(ListParams::default().labels("tier notin (web),!canary")).await,
        10
    );
    assert_eq!(
        count(ListParams::default().fields("metadata.name=cm-07")).await,
        1
    );
    assert_eq!(
        count(ListParams::default().fields("metadata.namespace=default,metadata.name!=cm-07"))
            .await,
        24
    );

    // Paging: every object exactly once, at the first page's version.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(first_rv.as_ref().unwrap(), &page.metadata.resource_version);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 25);

    // Cluster-wide lists see every namespace; pages follow the store's
    // (namespace, name) order even where "a-b" sorts before "a/" as text.
    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in ["a", "a-b"] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        nss.create(&PostParams::default(), &n).await.unwrap();
        let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        for name in ["x", "y"] {
            in_ns
                .create(&PostParams::default(), &cm(name, json!({})))
                .await
                .unwrap();
        }
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        29
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut lp = ListParams::default().limit(1);
    loop {
        let page = all.list(&lp).await.unwrap();
        for c in page.items {
            assert!(
                seen.insert((c.metadata.namespace.unwrap(), c.metadata.name.unwrap())),
                "seen twice"
            );
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 29);

    // deletecollection removes what the selector matches, nothing else.
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=db"),
        )
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().items.len(), 12);
    let left = api.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(left.len(), 13);
    assert!(
        left.iter()
            .all(|c| c.metadata.labels.as_ref().unwrap()["tier"] == "web")
    );
    let e = api_err(
        api.list(&ListParams::default().limit(5).continue_token("zz"))
            .await,
    );
    assert_eq!(e.code, 400);
}

#[tokio::test]
async fn crds_are_served_with_status_subresource_and_generation_rules() {
    let (_s, client) = setup().await;
    let api = widgets(&client).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let crd = crds.get("widgets.example.com").await.unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let mut w = widget("w1", 1);
    w.data["status"] = json!({"ignored": true});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "create ignores status"
    );

    // Status through /status: generation stays.
    let st = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"size": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(
        st.data["spec"]["size"], 1,
        "/status ignores everything but status"
    );
    assert_eq!(st.metadata.generation, Some(1));

    // Metadata changes leave generation alone; spec changes bump it.
    let labelled = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let mut replaced = labelled.clone();
    replaced.data["spec"]["size"] = json!(2);
    replaced.data["status"] = json!({"phase": "Overwritten"});
    let replaced = api
        .replace("w1", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.data["status"]["phase"], "Ready",
        "PUT on the main resource ignores status"
    );

    // Table output with the CRD's printer columns.
    let (code, table) = raw(
        &client,
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets",
        &[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Size", "Ready"]);
    assert_eq!(table["rows"][0]["cells"][1], 2);

    // Deleting the CRD removes its objects and stops serving them.
    let dynamic_crds: Api<DynamicObject> = Api::all_with(client.clone(), &kube::core::ApiResource::erase::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >(&()));
    dynamic_crds
        .delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CRD and its objects to go", || {
        let crds = crds.clone();
        async move {
            crds.get_opt("widgets.example.com")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    let e = api_err(api.get("w1").await);
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("p", json!({"a": "1"})))
        .await
        .unwrap();
    let p = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null, "n": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap(), [("n".to_string(), "1".to_string())].into());
    let p = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
                    {"op": "add", "path": "/data/m", "value": "2"},
                    {"op": "replace", "path": "/metadata/labels/a", "value": "3"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["m"], "2");
    assert_eq!(p.metadata.labels.as_ref().unwrap()["a"], "3");
    let failing = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "test", "path": "/data/m", "value": "nope"}]))
                    .unwrap(),
            ),
        )
        .await;
    assert_eq!(api_err(failing).code, 422);

    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}}}
    }))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let patched = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}
            ]}}}})),
        )
        .await
        .unwrap();
    let c = &patched.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("nginx:2"));
    let env: Vec<&str> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    // A patch without $setElementOrder puts the new entry before the live
    // ones, as the Kubernetes API server does.
    assert_eq!(env, ["B", "A"]);
    assert_eq!(patched.metadata.generation, Some(2));

    // Custom kinds refuse strategic merge patches, as on a real server.
    let w = widgets(&client).await;
    w.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let e = api_err(
        w.patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 2}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
}

#[tokio::test]
async fn server_side_apply_owns_fields_conflicts_and_removes() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let apply = |manager: &str, force: bool| {
        let mut pp = PatchParams::apply(manager);
        pp.force = force;
        pp
    };
    let body = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": data});
    let created = api
        .patch(
            "s",
            &apply("agent", false),
            &Patch::Apply(body(json!({"a": "1", "b": "2"}))),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some(), "apply creates");
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("agent"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Another manager setting a different value conflicts.
    let e = api_err(
        api.patch(
            "s",
            &apply("other", false),
            &Patch::Apply(body(json!({"a": "9"}))),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"agent\""),
        "{}",
        e.message
    );
    // Forced, it takes the field over.
    let forced = api
        .patch(
            "s",
            &apply("other", true),
            &Patch::Apply(body(json!({"a": "9"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "9");

    // A field the agent stops applying is removed; one it lost stays.
    let after = api
        .patch("s", &apply("agent", false), &Patch::Apply(body(json!({}))))
        .await
        .unwrap();
    assert_eq!(
        after.data.unwrap(),
        [("a".to_string(), "9".to_string())].into()
    );

    // YAML bodies, and apply without a field manager is refused.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yml\ndata:\n  x: \"1\"\n";
    let (code, obj) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/yml?fieldManager=yaml",
        &[("content-type", "application/apply-patch+yaml")],
        yaml.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    assert_eq!(obj["data"]["x"], "1");
    let (code, _) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/yml",
        &[("content-type", "application/apply-patch+yaml")],
        yaml.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(code, 422);

    // Status apply on a custom kind.
    let w = widgets(&client).await;
    w.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let st = w
        .patch_status(
            "w",
            &PatchParams::apply("ctrl").force(),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["ready"], true);
    assert_eq!(st.data["spec"]["size"], 1);
}

#[tokio::test]
async fn quantities_are_stored_in_canonical_form() {
    let (_s, client) = setup().await;
    let api: Api<Deployment> = Api::default_namespaced(client.clone());
    let deploy = |cpu: serde_json::Value, memory: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "q"},
            "spec": {
                "selector": {"matchLabels": {"app": "q"}},
                "template": {
                    "metadata": {"labels": {"app": "q"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
                }
            }
        })
    };
    let pp = PatchParams::apply("agent");
    let created = api
        .patch("q", &pp, &Patch::Apply(deploy(json!(0.5), "1024Mi")))
        .await
        .unwrap();
    let requests = |d: &Deployment| {
        serde_json::to_value(
            &d.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests,
        )
        .unwrap()
    };
    assert_eq!(requests(&created), json!({"cpu": "500m", "memory": "1Gi"}));
    // Applying the same request again, in either notation, changes nothing.
    for (cpu, memory) in [(json!(0.5), "1024Mi"), (json!("500m"), "1Gi")] {
        let again = api
            .patch("q", &pp, &Patch::Apply(deploy(cpu, memory)))
            .await
            .unwrap();
        assert_eq!(
            again.metadata.resource_version,
            created.metadata.resource_version,
            "{}\n{}",
            serde_json::to_string(&created).unwrap(),
            serde_json::to_string(&again).unwrap()
        );
    }
    // What is no quantity is refused, in the real server's words.
    let e = api_err(
        api.patch("q", &pp, &Patch::Apply(deploy(json!("half"), "1Gi")))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        e.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
}

#[tokio::test]
async fn a_subresource_the_kind_does_not_have_is_not_found() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("s", json!({})))
        .await
        .unwrap();
    for (method, body) in [("GET", Vec::new()), ("PUT", b"{}".to_vec())] {
        let (code, obj) = raw(
            &client,
            method,
            "/api/v1/namespaces/default/configmaps/s/status",
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(
            (code, obj["reason"].as_str()),
            (404, Some("NotFound")),
            "{method}: {obj}"
        );
    }
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/s/scale",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(code, 404);
    // A kind that has one serves it.
    let w = widgets(&client).await;
    w.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    assert_eq!(w.get_status("w").await.unwrap().data["spec"]["size"], 1);
}

#[tokio::test]
async fn put_without_resource_version_only_where_the_kind_allows_it() {
    let (_s, client) = setup().await;
    // A ConfigMap may be replaced unconditionally...
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("u", json!({})))
        .await
        .unwrap();
    let replaced = api
        .replace("u", &PostParams::default(), &cm("u", json!({"v": "2"})))
        .await
        .unwrap();
    assert_eq!(replaced.metadata.labels.unwrap()["v"], "2");
    // ...a custom resource (and a Lease) may not, in the real server's words.
    let w = widgets(&client).await;
    w.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let e = api_err(
        w.replace("w", &PostParams::default(), &widget("w", 2))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "widgets.example.com \"w\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    assert_eq!(w.get("w").await.unwrap().data["spec"]["size"], 1);
    let mut current = w.get("w").await.unwrap();
    current.data["spec"]["size"] = json!(3);
    let ok = w
        .replace("w", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(ok.data["spec"]["size"], 3);
    let leases: Api<DynamicObject> = Api::default_namespaced_with(
        client.clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
            "leases",
        ),
    );
    let lease: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let e = api_err(leases.replace("l", &PostParams::default(), &lease).await);
    assert_eq!(e.code, 422, "{}", e.message);
    assert!(
        e.message
            .starts_with("leases.coordination.k8s.io \"l\" is invalid"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn status_apply_owns_its_fields_and_removes_what_it_stops_applying() {
    let (_s, client) = setup().await;
    let w = widgets(&client).await;
    w.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let status = |s: serde_json::Value| {
        Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": s}))
    };
    let ctrl = PatchParams::apply("ctrl").force();
    w.patch_status(
        "w",
        &ctrl,
        &status(json!({"summary": {"desiredReady": 8, "ready": 7, "notReady": 1}})),
    )
    .await
    .unwrap();
    let got = w.get("w").await.unwrap();
    let entries = got.metadata.managed_fields.clone().unwrap();
    let entry = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some("ctrl"))
        .expect("the status apply has its managedFields entry");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(
        entry.fields_v1.as_ref().unwrap().0,
        json!({"f:status": {"f:summary": {"f:desiredReady": {}, "f:notReady": {}, "f:ready": {}}}})
    );
    // The next apply no longer names notReady: the server removes it.
    let st = w
        .patch_status(
            "w",
            &ctrl,
            &status(json!({"summary": {"desiredReady": 8, "ready": 8}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.data["status"],
        json!({"summary": {"desiredReady": 8, "ready": 8}})
    );
    // A main-resource apply by the same manager is a separate entry and
    // leaves the status alone.
    w.patch(
        "w",
        &ctrl,
        &Patch::Apply(
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"size": 2}}),
        ),
    )
    .await
    .unwrap();
    let got = w.get("w").await.unwrap();
    assert_eq!(got.data["status"]["summary"]["ready"], 8);
    let ctrl_entries: Vec<_> = got
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter(|e| e.manager.as_deref() == Some("ctrl"))
        .map(|e| e.subresource)
        .collect();
    assert_eq!(ctrl_entries.len(), 2, "{ctrl_entries:?}");

    // Conflicts name the owner as kube-apiserver does: an Apply owner by
    // name, its subresource, and several conflicts grouped by owner.
    let e = api_err(
        w.patch_status(
            "w",
            &PatchParams::apply("other"),
            &status(json!({"summary": {"desiredReady": 1, "ready": 0}})),
        )
        .await,
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Apply failed with 2 conflicts: conflicts with \"ctrl\" with subresource \"status\":\n\
         - .status.summary.desiredReady\n- .status.summary.ready"
    );
    let e = api_err(
        w.patch_status(
            "w",
            &PatchParams::apply("other"),
            &status(json!({"summary": {"ready": 0}})),
        )
        .await,
    );
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"ctrl\" with subresource \"status\": .status.summary.ready"
    );
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = api.create(&pp, &cm("d", json!({}))).await.unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("d"));
    assert!(api.get_opt("d").await.unwrap().is_none());
    api.create(&PostParams::default(), &cm("d", json!({})))
        .await
        .unwrap();
    let patch = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let p = api
        .patch(
            "d",
            &patch,
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["k"], "changed");
    assert_eq!(api.get("d").await.unwrap().data.unwrap()["k"], "v");
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("d", &dp).await.unwrap();
    assert!(api.get_opt("d").await.unwrap().is_some());
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    let pending = api.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = pending.left().expect("pending deletion returns the object");
    assert!(obj.metadata.deletion_timestamp.is_some());
    // No new finalizers on an object being deleted.
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}),
            ),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
}

fn child(name: &str, owner: &ConfigMap, finalizers: Option<Vec<String>>) -> ConfigMap {
    let mut c = cm(name, json!({}));
    c.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.metadata.name.clone().unwrap(),
            uid: owner.metadata.uid.clone().unwrap(),
            block_owner_deletion: Some(true),
            controller: Some(true),
        },
    ]);
    c.metadata.finalizers = finalizers;
    c
}

#[tokio::test]
async fn owner_references_are_garbage_collected_in_all_three_modes() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let gone = |name: &'static str| {
        let api = api.clone();
        move || {
            let api = api.clone();
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        }
    };

    // Background: the owner goes at once, the dependent after.
    let owner = api.create(&pp, &cm("bg", json!({}))).await.unwrap();
    api.create(&pp, &child("bg-child", &owner, None))
        .await
        .unwrap();
    api.delete("bg", &DeleteParams::background()).await.unwrap();
    eventually("the background dependent to go", gone("bg-child")).await;

    // Foreground: the owner waits for its dependents.
    let owner = api.create(&pp, &cm("fg", json!({}))).await.unwrap();
    api.create(
        &pp,
        &child("fg-child", &owner, Some(vec!["example.com/hold".into()])),
    )
    .await
    .unwrap();
    api.delete("fg", &DeleteParams::foreground()).await.unwrap();
    eventually("the dependent to be deleting", || {
        let api = api.clone();
        async move {
            api.get("fg-child")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .map(|_| ())
        }
    })
    .await;
    let waiting = api.get("fg").await.unwrap();
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    api.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the foreground owner to go", gone("fg")).await;

    // Orphan: the dependent stays, without its owner reference.
    let owner = api.create(&pp, &cm("or", json!({}))).await.unwrap();
    api.create(&pp, &child("or-child", &owner, None))
        .await
        .unwrap();
    api.delete("or", &DeleteParams::orphan()).await.unwrap();
    eventually("the orphaning owner to go", gone("or")).await;
    let orphan = api.get("or-child").await.unwrap();
    assert!(orphan.metadata.owner_references.is_none());

    // A dependent whose owner never existed is collected.
    let ghost: ConfigMap = {
        let mut fake = cm("ghost-owner", json!({}));
        fake.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());
        child("ghost", &fake, None)
    };
    api.create(&pp, &ghost).await.unwrap();
    eventually("a dangling dependent to go", gone("ghost")).await;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("or-child", &dp).await.unwrap();
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let (_s, client) = setup().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    let w = widgets(&client).await;
    let team_widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "team", &widget_resource());
    team_widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    let terminating = nss.get_opt("team").await.unwrap();
    if let Some(t) = terminating {
        assert_eq!(t.status.unwrap().phase.as_deref(), Some("Terminating"));
        let e = api_err(
            api.create(&PostParams::default(), &cm("late", json!({})))
                .await,
        );
        assert_eq!(e.code, 403);
    }
    eventually("the namespace to go", || {
        let nss = nss.clone();
        async move { nss.get_opt("team").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let all: Api<ConfigMap> = Api::all(client.clone());
    let left = all
        .list(&ListParams::default().fields("metadata.namespace=team"))
        .await
        .unwrap();
    assert!(left.items.is_empty());
    assert!(
        w.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn tables_for_builtin_kinds() {
    let (_s, client) = setup().await;
    let (code, t) = raw(
        &client,
        "GET",
        "/api/v1/namespaces",
        &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Age"]);
    assert_eq!(
        t["rows"].as_array().unwrap().len(),
        4,
        "the system namespaces"
    );
    assert_eq!(t["rows"][0]["cells"][1], "Active");
}

#[tokio::test]
async fn apply_creating_keeps_what_the_server_sets_at_creation() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let (_s, client) = setup().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces
        .patch(
            "applied",
            &PatchParams::apply("me"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "applied"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let created = crds
        .patch(
            "widgets.example.com",
            &PatchParams::apply("me"),
            &Patch::Apply(crd),
        )
        .await
        .unwrap();
    let conditions = created.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{conditions:?}"
    );
}
