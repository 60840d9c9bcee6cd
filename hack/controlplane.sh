#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy (no envtest download
# exists here), caches them by version in the user's cache folder so clean
# clones, CI and `make dev` reuse them, and links them into bin/.
#
# Usage: hack/controlplane.sh BIN_DIR
# Prints the directory to use as KUBEBUILDER_ASSETS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${1:?usage: controlplane.sh BIN_DIR}
kube_version=v1.37.2
etcd_version=v3.6.16
platform="$(go env GOOS)-$(go env GOARCH)"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/hookrelay/controlplane

say() { printf 'controlplane: %s\n' "$*" >&2; }

# build NAME VERSION MODULE_DIR PACKAGE LDFLAGS
build() {
	local name=$1 version=$2 module_dir=$3 package=$4 ldflags=$5
	local dest="$cache/$name-$version-$platform"
	if [[ ! -x "$dest/$name" ]]; then
		say "building $name $version from the Go module proxy (cold: several minutes)"
		local started=$SECONDS
		mkdir -p "$dest"
		(cd "$module_dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/$name.tmp" "$package")
		mv "$dest/$name.tmp" "$dest/$name"
		say "built $name in $((SECONDS - started))s"
	fi
	mkdir -p "$bin_dir/controlplane"
	ln -sf "$dest/$name" "$bin_dir/controlplane/$name"
}

build kube-apiserver "$kube_version" "$here/controlplane/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
	"-s -w -X k8s.io/component-base/version.gitVersion=$kube_version"
build etcd "$etcd_version" "$here/controlplane/etcd" . "-s -w"

cd "$bin_dir/controlplane" && pwd
