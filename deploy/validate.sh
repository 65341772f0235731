#!/usr/bin/env bash
# deploy/validate.sh: every manifest in deploy/ checked offline.
#
# - each overlay builds with kustomize (`kubectl kustomize`; scripts/install-deps.sh
#   installs Debian's kubectl when there is none);
# - each built overlay and each base file validates against the Kubernetes
#   OpenAPI schemas of the version we build against (k8s-openapi's v1_33),
#   strictly (unknown fields are errors), with PyPI's kubernetes-validate,
#   which ships the schemas (installed pinned into $PLEXUS_TOOLS_VENV by
#   scripts/install-deps.sh);
# - the JSON documents in the ConfigMap parse, and each overlay holds the
#   objects it promises.
# Nothing talks to a cluster. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=${PLEXUS_TOOLS_VENV:-/opt/plexus-tools/venv}
validate=$venv/bin/kubernetes-validate
k8s_version=1.33.0
fail() { echo "deploy/validate.sh: $*" >&2; exit 1; }

[ -x "$validate" ] || fail "$validate missing: run scripts/install-deps.sh"
command -v kubectl >/dev/null || fail "kubectl missing: run scripts/install-deps.sh"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The plain manifests one by one (kustomization.yaml files are no API objects).
mapfile -t manifests < <(find deploy -name '*.yaml' ! -name kustomization.yaml ! -name '*-patch.yaml' | sort)
"$validate" --strict --quiet -k "$k8s_version" "${manifests[@]}"

for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  # Newer kustomize warns about `bases`/`patchesStrategicMerge` (kept for
  # older kubectl): warnings go to stderr, which we keep for errors.
  kubectl kustomize "$overlay" >"$out/$name.yaml" 2>"$out/$name.err" ||
    fail "kustomize $overlay: $(cat "$out/$name.err")"
  "$validate" --strict --quiet -k "$k8s_version" "$out/$name.yaml"
  "$venv/bin/python3" - "$out/$name.yaml" "$name" <<'PY'
import json, sys
import yaml  # kubernetes-validate's dependency; this runs in its venv
path, name = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
want = {("CustomResourceDefinition", "network-attachment-definitions.k8s.cni.cncf.io"),
        ("CustomResourceDefinition", "multi-networkpolicies.k8s.cni.cncf.io"),
        ("ServiceAccount", "plexus"), ("ClusterRole", "plexus"), ("ClusterRoleBinding", "plexus"),
        ("ClusterRole", "plexus-policy"), ("ClusterRoleBinding", "plexus-policy"),
        ("ConfigMap", "plexus-config"), ("DaemonSet", "plexus")}
if name == "kubernetes":
    want |= {("ClusterRole", "plexus-kube-store"), ("ClusterRoleBinding", "plexus-kube-store"),
             ("CustomResourceDefinition", "plexuskeys.plexus.io")}
missing = want - kinds
extra = kinds - want
assert not missing and not extra, f"{name}: missing {missing}, unexpected {extra}"
for d in docs:
    if d["kind"] == "ConfigMap":
        for key, text in d["data"].items():
            if key.endswith((".json", ".conflist", ".conf")):
                try:
                    json.loads(text)
                except ValueError as e:
                    sys.exit(f"{name}: ConfigMap key {key}: {e}")
    if d["kind"] == "DaemonSet":
        c = {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]}
        store = {e["name"]: e.get("value") for e in c["plexusd"]["env"]}["PLEXUS_STORE"]
        expect = "kubernetes" if name == "kubernetes" else "etcd://"
        assert store.startswith(expect), f"{name}: PLEXUS_STORE is {store!r}"
print(f"deploy/validate.sh: overlay {name}: {len(docs)} objects valid")
PY
done

# The cluster-wide uninstall: builds, validates, holds only its DaemonSet,
# and mounts the host directories at the paths the install recorded.
kubectl kustomize deploy/uninstall >"$out/uninstall.yaml" 2>"$out/uninstall.err" ||
  fail "kustomize deploy/uninstall: $(cat "$out/uninstall.err")"
"$validate" --strict --quiet -k "$k8s_version" "$out/uninstall.yaml"
"$venv/bin/python3" - "$out/uninstall.yaml" deploy/base/daemonset.yaml <<'PY'
import sys
import yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("DaemonSet", "plexus-uninstall")], docs
install = yaml.safe_load(open(sys.argv[2]))
mounts = lambda c: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
inst = mounts(install["spec"]["template"]["spec"]["initContainers"][0])
uninst = mounts(docs[0]["spec"]["template"]["spec"]["initContainers"][0])
for vol in ("cni-bin", "cni-conf"):
    assert inst[vol] == uninst[vol], f"{vol}: install mounts {inst[vol]}, uninstall {uninst[vol]}"
print("deploy/validate.sh: uninstall: 1 object valid")
PY
