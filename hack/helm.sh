#!/usr/bin/env bash
# Builds helm from its Go module (hack/helm/go.mod, so that helm's
# dependencies stay off the main go.mod), caches it by version in the user's
# cache folder and links it into bin/.
#
# Usage: hack/helm.sh BIN_DIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${1:?usage: helm.sh BIN_DIR}
module_dir="$here/helm"
package=helm.sh/helm/v3/cmd/helm
version=$(cd "$module_dir" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
dest=${XDG_CACHE_HOME:-$HOME/.cache}/hookrelay/tools/helm-$version

say() { printf 'helm: %s\n' "$*" >&2; }

if [[ ! -x "$dest/helm" ]]; then
	cd "$module_dir"
	total=$(go list -deps "$package" | wc -l)
	say "building helm $version from the Go module proxy ($total packages; cold: a few minutes)"
	started=$SECONDS
	mkdir -p "$dest"
	# go build -v names each package it compiles (the cached ones it skips,
	# so the count may stop short of the total): a line every 50 is the
	# progress. Anything else (errors) goes through as is.
	CGO_ENABLED=0 go build -v -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
		-o "$dest/helm.tmp" "$package" 2>&1 |
		awk -v total="$total" '/[ :]|^#/ { print > "/dev/stderr"; fflush(); next }
			++n % 50 == 0 { printf "helm: compiled %d of at most %d packages\n", n, total > "/dev/stderr"; fflush() }'
	mv "$dest/helm.tmp" "$dest/helm"
	say "built helm $version in $((SECONDS - started))s"
fi
mkdir -p "$bin_dir"
ln -sf "$dest/helm" "$bin_dir/helm"
