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

# Seconds between two progress lines of a build.
progress_every=${CONTROLPLANE_PROGRESS_EVERY:-30}

# progress NAME TOTAL reads `go build -v` on stdin, one line for each package
# compiled, and says every $progress_every seconds how many were compiled of
# the TOTAL the binary is built from (packages already in Go's build cache
# are not compiled again, so a warm build ends below it). Other lines, such
# as errors and downloads, pass through.
progress() {
	local name=$1 total=$2 started=$SECONDS last=$SECONDS compiled=0 line
	while IFS= read -r line; do
		if [[ $line =~ ^[A-Za-z0-9._~/-]+$ ]]; then
			compiled=$((compiled + 1))
			if ((SECONDS - last >= progress_every)); then
				say "building $name: $compiled of $total packages compiled, $((SECONDS - started))s"
				last=$SECONDS
			fi
		else
			printf '%s\n' "$line" >&2
		fi
	done
}

# build NAME VERSION MODULE_DIR PACKAGE LDFLAGS
build() {
	local name=$1 version=$2 module_dir=$3 package=$4 ldflags=$5
	local dest="$cache/$name-$version-$platform"
	if [[ ! -x "$dest/$name" ]]; then
		say "building $name $version from the Go module proxy (cold: several minutes)"
		local started=$SECONDS
		mkdir -p "$dest"
		local total
		# Listing the dependencies first also downloads the modules.
		total=$(cd "$module_dir" && go list -deps "$package" | wc -l)
		(cd "$module_dir" && CGO_ENABLED=0 go build -v -trimpath -ldflags "$ldflags" -o "$dest/$name.tmp" "$package" 2>&1 >/dev/null) | progress "$name" "$total"
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
