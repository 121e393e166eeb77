#!/usr/bin/env python3
"""A chart source for tests, on 127.0.0.1: a Helm chart repository (the
files under ROOT: index.yaml and packaged charts) and an OCI registry
serving ROOT/oci/<repository>/<tag>.tgz through the distribution API
(/v2/...), as Helm pushes charts. Optional basic auth (--user/--password)
and TLS (--cert/--key). Prints the port, then serves until killed.

GET /_stats answers how many times each path was fetched, so tests can
count downloads. It is a fixture: the client side is what is tested."""

import argparse
import base64
import hashlib
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

args = None
counts = {}
lock = threading.Lock()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_parts(repo, tag):
    path = os.path.join(args.root, "oci", repo, tag + ".tgz")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        layer = f.read()
    config = json.dumps({"name": repo.rsplit("/", 1)[-1], "version": tag.replace("_", "+")}).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": HELM_LAYER, "digest": digest(layer), "size": len(layer)}],
    }).encode()
    return manifest, config, layer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def authorized(self):
        if not args.user:
            return True
        want = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
        return self.headers.get("Authorization") == want

    def send(self, code, body=b"", ctype="application/octet-stream", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_stats":
            with lock:
                return self.send(200, json.dumps(counts).encode(), "application/json")
        with lock:
            counts[path] = counts.get(path, 0) + 1
        if not self.authorized():
            return self.send(401, b"unauthorized", "text/plain",
                             {"WWW-Authenticate": 'Basic realm="charts"'})
        if path == "/v2/" or path == "/v2":
            return self.send(200, b"{}", "application/json")
        if path.startswith("/v2/"):
            return self.registry(path[len("/v2/"):])
        local = os.path.normpath(os.path.join(args.root, path.lstrip("/")))
        if not local.startswith(os.path.abspath(args.root)) or not os.path.isfile(local):
            return self.send(404, b"not found", "text/plain")
        with open(local, "rb") as f:
            data = f.read()
        ctype = "text/yaml" if local.endswith(".yaml") else "application/gzip"
        return self.send(200, data, ctype)

    def registry(self, rest):
        if "/tags/list" in rest:
            repo = rest.split("/tags/list")[0]
            d = os.path.join(args.root, "oci", repo)
            tags = sorted(f[:-4] for f in os.listdir(d) if f.endswith(".tgz")) if os.path.isdir(d) else []
            if not tags:
                return self.send(404, json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}).encode(), "application/json")
            return self.send(200, json.dumps({"name": repo, "tags": tags}).encode(), "application/json")
        if "/manifests/" in rest:
            repo, ref = rest.split("/manifests/", 1)
            d = os.path.join(args.root, "oci", repo)
            tags = [f[:-4] for f in os.listdir(d) if f.endswith(".tgz")] if os.path.isdir(d) else []
            for tag in tags:
                parts = oci_parts(repo, tag)
                if parts and (ref == tag or ref == digest(parts[0])):
                    return self.send(200, parts[0], OCI_MANIFEST, {"Docker-Content-Digest": digest(parts[0])})
            return self.send(404, json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode(), "application/json")
        if "/blobs/" in rest:
            repo, want = rest.split("/blobs/", 1)
            d = os.path.join(args.root, "oci", repo)
            for f in (os.listdir(d) if os.path.isdir(d) else []):
                if f.endswith(".tgz"):
                    _, config, layer = oci_parts(repo, f[:-4])
                    for blob in (config, layer):
                        if digest(blob) == want:
                            return self.send(200, blob, "application/octet-stream",
                                             {"Docker-Content-Digest": want})
            return self.send(404, json.dumps({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}).encode(), "application/json")
        return self.send(404, b"not found", "text/plain")


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()
    args.root = os.path.abspath(args.root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
