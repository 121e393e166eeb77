#!/usr/bin/env python3
"""Generates crates/apiserver/src/protobuf/generated.rs: JSON conversions
for the k8s-pb messages of the built-in kinds the server stores.

Field names and types come from the k8s-pb sources; JSON names from the
k8s-openapi sources of the same Kubernetes version. Each generated impl
destructures its message exhaustively, so a k8s-pb upgrade that adds a
field fails to compile until this is re-run.

Usage: python3 gen/protobuf_json.py <k8s-pb src> <k8s-openapi src/v1_xx> <out>
"""

import os
import re
import sys

ROOTS = [
    ("api::core::v1", "Namespace"),
    ("api::core::v1", "ConfigMap"),
    ("api::core::v1", "Secret"),
    ("api::core::v1", "ServiceAccount"),
    ("api::core::v1", "Service"),
    ("api::core::v1", "Event"),
    ("api::events::v1", "Event"),
    ("api::coordination::v1", "Lease"),
    ("api::apps::v1", "Deployment"),
    ("api::apps::v1", "StatefulSet"),
    ("api::apps::v1", "DaemonSet"),
    ("api::batch::v1", "Job"),
    ("apimachinery::pkg::apis::meta::v1", "DeleteOptions"),
]

# Converted by hand in protobuf/mod.rs.
SPECIAL = {
    ("apimachinery::pkg::apis::meta::v1", "Time"),
    ("apimachinery::pkg::apis::meta::v1", "MicroTime"),
    ("apimachinery::pkg::apis::meta::v1", "Duration"),
    ("apimachinery::pkg::apis::meta::v1", "FieldsV1"),
    ("apimachinery::pkg::util::intstr", "IntOrString"),
    ("apimachinery::pkg::api::resource", "Quantity"),
    ("apimachinery::pkg::runtime", "RawExtension"),
}

# Go pointer fields whose zero value means something (false, 0): kept in
# JSON when set. Every other zero scalar is omitted, as Go's omitempty
# does for the non-pointer fields that protobuf always carries.
KEEP_ZERO = {
    "automountServiceAccountToken", "immutable", "suspend", "manualSelector",
    "privileged", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "shareProcessNamespace", "enableServiceLinks",
    "setHostnameAsFQDN", "hostUsers", "allocateLoadBalancerNodePorts",
    "optional", "hostProcess", "replicas", "revisionHistoryLimit",
    "progressDeadlineSeconds", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "runAsUser", "runAsGroup", "fsGroup", "priority",
    "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes", "completions",
    "parallelism", "ttlSecondsAfterFinished", "defaultMode", "mode",
    "partition", "expirationSeconds", "deletionGracePeriodSeconds",
    "gracePeriodSeconds", "orphanDependents", "ignoreStoreReadErrorWithClusterBreakingPotential",
    "leaseDurationSeconds", "leaseTransitions", "controller", "blockOwnerDeletion",
}

# Names neither k8s-openapi table spells the way prost does.
RENAMES = {"target_ww_ns": "targetWWNs"}

FIELD_RE = re.compile(r"#\[prost\((.*)\)\]")


def camel(snake):
    parts = snake.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def parse_pb(src):
    """{(module, struct): [(rust_field, prost_attr, type_text)]}"""
    structs = {}
    for root, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        rel = os.path.relpath(root, src)
        if rel == ".":
            continue
        module = rel.replace(os.sep, "::")
        lines = open(os.path.join(root, "mod.rs")).read().split("\n")
        i = 0
        current = None
        attr = None
        while i < len(lines):
            line = lines[i].strip()
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = []
                structs[(module, m.group(1))] = current
            elif line == "}" and current is not None:
                current = None
            elif current is not None:
                fm = FIELD_RE.match(line)
                if fm:
                    attr = fm.group(1)
                elif line.startswith("pub ") and attr is not None:
                    text = line
                    depth = text.count("<") - text.count(">")
                    while not (depth == 0 and text.endswith(",")):
                        i += 1
                        more = lines[i].strip()
                        text += more
                        depth = text.count("<") - text.count(">")
                    name, ty = text[len("pub "):].split(":", 1)
                    current.append((name.strip(), attr, ty.strip().rstrip(",")))
                    attr = None
            i += 1
    return structs


def parse_openapi(src):
    """{(module, lowercased struct): {rust_field: json_name}}"""
    out = {}
    for root, _, files in os.walk(src):
        rel = os.path.relpath(root, src)
        for f in files:
            if not f.endswith(".rs") or f == "mod.rs":
                continue
            text = open(os.path.join(root, f)).read()
            m = re.search(r"pub struct (\w+) \{", text)
            if not m:
                continue
            names = dict(
                (rust, js)
                for js, rust in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text)
            )
            module = rel.replace(os.sep, "::")
            out[(module, m.group(1).lower())] = names
    return out


def openapi_module(pb_module):
    # k8s-pb: api::core::v1, apimachinery::pkg::apis::meta::v1
    # k8s-openapi: api::core::v1, apimachinery::pkg::apis::meta::v1
    return pb_module


def resolve(module, ty):
    """The (module, struct) a type path names, relative to `module`."""
    parts = ty.split("::")
    name = parts[-1]
    path = parts[:-1]
    base = module.split("::")
    while path and path[0] == "super":
        base = base[:-1]
        path = path[1:]
    return ("::".join(base + path), name)


def inner_type(ty, wrapper):
    inner = ty[ty.index("<") + 1: ty.rindex(">")]
    return inner


def generate(pb, openapi):
    todo = list(ROOTS)
    seen = set()
    order = []
    while todo:
        key = todo.pop(0)
        if key in seen or key in SPECIAL:
            continue
        if key not in pb:
            sys.exit(f"no k8s-pb message {key}")
        seen.add(key)
        order.append(key)
        module = key[0]
        for name, attr, ty in pb[key]:
            if attr.startswith("message") or "message" in attr.split("=")[-1]:
                target = re.findall(r"([\w:]+)>*$", ty.replace(" ", ""))
                path = ty
                for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<"):
                    if path.startswith(wrapper):
                        path = path[len(wrapper):-1]
                if "BTreeMap" in path:
                    path = path.split(",")[-1].strip().rstrip(">").strip()
                todo.append(resolve(module, path))
    out = [
        "// @generated by crates/apiserver/gen/protobuf_json.py from the k8s-pb and",
        "// k8s-openapi sources. Do not edit; re-run the generator.",
        "",
        "use super::{Item, Json, field, inline, keep};",
        "use serde_json::{Map, Value};",
        "",
    ]
    # Rust field name -> JSON name over every k8s-openapi struct, for the
    # messages Go inlines (VolumeSource, ProbeHandler, ...) that k8s-openapi
    # has no struct for.
    votes = {}
    for table in openapi.values():
        for rust, js in table.items():
            votes.setdefault(rust, {}).setdefault(js, 0)
            votes[rust][js] += 1
    anywhere = {r: max(v, key=v.get) for r, v in votes.items()}
    for module, struct in sorted(order):
        fields = pb[(module, struct)]
        own = openapi.get((openapi_module(module), struct.lower()))
        names = own or {}
        path = f"k8s_pb::{module}::{struct}"
        lines = [f"impl Json for {path} {{", "    fn json(&self) -> Value {"]
        if fields:
            binds = ", ".join(n for n, _, _ in fields)
            lines.append(f"        let {path} {{ {binds} }} = self;")
        lines.append("        let mut m = Map::new();")
        for name, attr, ty in fields:
            bare = name[2:] if name.startswith("r#") else name
            js = names.get(bare) or names.get(bare + "_")
            if js is None and own is not None and attr.startswith("message"):
                # An embedded Go struct: its fields are the parent's in JSON.
                lines.append(f"        inline(&mut m, {name});")
                continue
            if js is None:
                js = RENAMES.get(bare)
            if js is None:
                js = anywhere.get(bare) or anywhere.get(bare + "_")
            if js is None:
                js = camel(bare)
                print(f"warning: {module}::{struct}.{name}: no k8s-openapi name; using {js}", file=sys.stderr)
            f = "keep" if js in KEEP_ZERO else "field"
            lines.append(f'        {f}(&mut m, "{js}", {name});')
        lines.append("        Value::Object(m)")
        lines.append("    }")
        lines.append("}")
        lines.append(f"impl Item for {path} {{}}")
        lines.append("")
        out.extend(lines)
    out.append("/// Decodes the message of an `apiVersion` and `kind` into JSON.")
    out.append("pub fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, prost::DecodeError>> {")
    out.append("    use prost::Message;")
    out.append("    Some(match (api_version, kind) {")
    for module, struct in ROOTS:
        parts = module.split("::")
        if parts[0] == "api":
            group = "" if parts[1] == "core" else {"coordination": "coordination.k8s.io", "events": "events.k8s.io"}.get(parts[1], parts[1])
            gv = f"{group}/{parts[2]}" if group else parts[2]
            pattern = f'("{gv}", "{struct}")'
        else:
            pattern = f'(_, "{struct}")'
        out.append(f"        {pattern} => k8s_pb::{module}::{struct}::decode(raw).map(|m| m.json()),")
    out.append("        _ => return None,")
    out.append("    })")
    out.append("}")
    return "\n".join(out) + "\n"


def main():
    pb_src, openapi_src, out = sys.argv[1:4]
    pb = parse_pb(pb_src)
    openapi = parse_openapi(openapi_src)
    code = generate(pb, openapi)
    with open(out, "w") as f:
        f.write(code)


if __name__ == "__main__":
    main()
