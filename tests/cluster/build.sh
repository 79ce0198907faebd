#!/usr/bin/env bash
# Build the real control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd) from Go
# modules through the Go module proxy, into a cache outside the repo. Skips the build when all four
# binaries are already there. Usage: tests/cluster/build.sh [BIN_DIR]
#   default BIN_DIR: $HOME/.cache/llmtrain-cluster/<k8s version>-etcd-<etcd version>/bin
# The versions come from kube/go.mod and etcd/go.mod (one source of truth).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# "require M vX" or, inside a require block, "M vX" (not the replace lines "M => ...").
modver() { awk -v m="$1" '($1 == "require" && $2 == m) {print $3; exit} ($1 == m && $2 ~ /^v[0-9]/) {print $2; exit}' "$2"; }
kube_version="$(modver k8s.io/kubernetes "$here/kube/go.mod")"
etcd_version="$(modver go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")"
[[ "$kube_version" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || { echo "build.sh: no k8s.io/kubernetes version in kube/go.mod" >&2; exit 1; }
major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
[[ -n "$etcd_version" ]] || { echo "build.sh: no etcd version in etcd/go.mod" >&2; exit 1; }

bin="${1:-${HOME}/.cache/llmtrain-cluster/${kube_version}-etcd-${etcd_version}/bin}"
names=(kube-apiserver kube-controller-manager kube-scheduler etcd)

have=1
for n in "${names[@]}"; do [[ -x "$bin/$n" ]] || have=0; done
if (( have )); then
  echo "cluster binaries present in $bin (k8s $kube_version, etcd $etcd_version)"
  exit 0
fi

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
mkdir -p "$bin"
# Build into a scratch folder next to the cache, then move in: an interrupted build leaves no half set.
tmp="$(mktemp -d "$bin/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

t0=$SECONDS
echo "== downloading modules (k8s.io/kubernetes $kube_version, etcd $etcd_version)"
(cd "$here/kube" && go mod download)
(cd "$here/etcd" && go mod download)
t1=$SECONDS
echo "== downloaded in $((t1 - t0)) s; compiling (slow on a cold build cache)"

kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${kube_version}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=${major} -X k8s.io/component-base/version.gitMinor=${minor}"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
(cd "$here/kube" && go build -trimpath -pgo=off -ldflags "$kube_ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
t2=$SECONDS
echo "== kube binaries compiled in $((t2 - t1)) s"

# etcd's own build sets GitSHA the same way; a module build has no git tree, so name the release instead.
(cd "$here/etcd" && go build -trimpath -pgo=off \
  -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_version}" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
t3=$SECONDS
echo "== etcd compiled in $((t3 - t2)) s"

for n in "${names[@]}"; do mv -f "$tmp/$n" "$bin/$n"; done
echo "cluster binaries built in $bin in $((t3 - t0)) s (download $((t1 - t0)) s, compile $((t3 - t1)) s)"
