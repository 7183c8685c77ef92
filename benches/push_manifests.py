"""Pushes COUNT distinct cache manifests across REPOS repositories (default 10); prints
`repo digest`. SALT (default empty) makes another set of manifests than the default one.

Every TAG_EVERY-th manifest (default 1: all) is pushed by tag, the rest by digest: registries
delete slower in repositories with many tags.
"""
import hashlib
import os
import http.client
import json
import sys

host, count = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection(host)


def request(method, path, body=b"", headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise SystemExit(f"{method} {path}: {response.status} {data[:200]!r}")
    return response


def blob(repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = request("POST", f"/v2/{repo}/blobs/uploads/")
    location = r.getheader("Location")
    sep = "&" if "?" in location else "?"
    path = location.split(host, 1)[-1]
    request("PUT", f"{path}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
    return {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": digest, "size": len(data)}


repos = [f"bench/cache{i}" for i in range(int(os.environ.get("REPOS", "10")))]
salt = os.environ.get("SALT", "")
configs = {repo: blob(repo, b'{"layers":[],"records":[]}') for repo in repos}
tag_every = int(os.environ.get("TAG_EVERY", "1"))
for i in range(count):
    repo = repos[i % len(repos)]
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": configs[repo],
        "layers": [],
        "annotations": {"n": f"{salt}{i}"},
    }).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    reference = f"{salt}t{i}" if i % tag_every == 0 else digest
    request("PUT", f"/v2/{repo}/manifests/{reference}", manifest,
            {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    print(repo, digest)
