#!/usr/bin/env bash
# Cross-builds fleetwatch's release tarballs into dist/, laid out as Prometheus's are:
#   dist/fleetwatch-VERSION.OS-ARCH.tar.gz holding fleetwatch-VERSION.OS-ARCH/{fleetwatch,
#   fleetwatch.yml, README.md}, and dist/sha256sums.txt over the tarballs.
# Static binaries (CGO_ENABLED=0), -trimpath, without symbol table and DWARF.
#
#   hack/release.sh VERSION [OS/ARCH ...]   (default: linux and darwin on amd64 and arm64)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: hack/release.sh VERSION [OS/ARCH ...]}
shift
platforms=("$@")
[ ${#platforms[@]} -gt 0 ] || platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
for p in "${platforms[@]}"; do
	[[ $p =~ ^[a-z0-9]+/[a-z0-9]+$ ]] || { echo "release: $p is not OS/ARCH" >&2 && exit 2; }
done
# GNU tar (--sort, --mtime) and sha256sum, as on Linux; on macOS install gnu-tar and coreutils.
tar --version 2>/dev/null | grep -q 'GNU tar' || { echo "release: needs GNU tar" >&2 && exit 2; }
built=()
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
mkdir -p dist
for p in "${platforms[@]}"; do
	os=${p%/*} arch=${p#*/}
	name="fleetwatch-$version.$os-$arch"
	rm -rf "dist/$name" "dist/$name.tar.gz"
	mkdir -p "dist/$name"
	start=$SECONDS
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
		-ldflags="-s -w -X main.version=$version -X main.revision=$revision" \
		-o "dist/$name/fleetwatch" ./cmd/fleetwatch
	cp deploy/kubernetes/base/fleetwatch.yml "dist/$name/fleetwatch.yml"
	cp README.md "dist/$name/README.md"
	# Reproducible: fixed owner, order and times.
	chmod 0755 "dist/$name/fleetwatch" && chmod 0644 "dist/$name/fleetwatch.yml" "dist/$name/README.md"
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=go-w -C dist -cf - "$name" | gzip -9n >"dist/$name.tar.gz"
	built+=("$name.tar.gz")
	rm -rf "dist/$name"
	echo "release: dist/$name.tar.gz ($(du -h "dist/$name.tar.gz" | cut -f1), built in $((SECONDS - start))s)" >&2
done
# Over this run's tarballs only (not ones an earlier run left).
(cd dist && sha256sum "${built[@]}" >sha256sums.txt)
echo "release: dist/sha256sums.txt" >&2
