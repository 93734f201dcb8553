#!/usr/bin/env bash
# Installs the real peer binaries that fleetwatch's integration and end-to-end tests run
# (prometheus, promtool, alertmanager, amtool, thanos) from the Go module proxy into a cache
# directory outside the clone. A binary that is already there is not built again, so a second
# run costs seconds. Prints the bin directory on its last line.
#
#   FLEETWATCH_PEERS_DIR  cache root (default: $HOME/.cache/fleetwatch/peers)
set -euo pipefail

PROMETHEUS_VERSION=v0.309.1
ALERTMANAGER_VERSION=v0.30.0
THANOS_VERSION=v0.42.4

here=$(cd "$(dirname "$0")" && pwd)
root=${FLEETWATCH_PEERS_DIR:-$HOME/.cache/fleetwatch/peers}
bin="$root/bin"
mkdir -p "$bin"

# Each binary lives under a directory named by its version, and bin/ holds symlinks, so bumping
# a version rebuilds exactly that peer.
install_go() { # name module version
	local name=$1 module=$2 version=$3 dir="$root/$1-$3"
	if [ ! -x "$dir/$name" ]; then
		echo "peers: building $name $version" >&2
		local start=$SECONDS
		GOBIN="$dir" go install "$module@$version"
		echo "peers: built $name in $((SECONDS - start))s" >&2
	fi
	ln -sfn "$dir/$name" "$bin/$name"
}

# Prometheus and Thanos refuse `go install` (exclude and replace directives in their go.mod), so
# they are built from our wrapper modules under hack/peers/, which carry those directives and a
# go.sum that pins every dependency.
install_wrapped() { # name wrapper-dir package version [build-tags]
	local name=$1 wrapper=$2 pkg=$3 version=$4 tags=${5:-}
	local dir="$root/$1-$4${tags:+-$tags}"
	if [ ! -x "$dir/$name" ]; then
		echo "peers: building $name $version" >&2
		local start=$SECONDS
		mkdir -p "$dir"
		(cd "$here/peers/$wrapper" && go build -tags "$tags" -o "$dir/$name.tmp" "$pkg")
		mv "$dir/$name.tmp" "$dir/$name"
		echo "peers: built $name in $((SECONDS - start))s" >&2
	fi
	ln -sfn "$dir/$name" "$bin/$name"
}

install_wrapped prometheus prometheus github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION"
install_wrapped promtool prometheus github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION"
install_go alertmanager github.com/prometheus/alertmanager/cmd/alertmanager "$ALERTMANAGER_VERSION"
install_go amtool github.com/prometheus/alertmanager/cmd/amtool "$ALERTMANAGER_VERSION"
# Thanos is built with the slicelabels tag, as its own release build (.promu.yml) is: its
# labelpb package assumes that layout, and a stringlabels build panics in the sidecar.
install_wrapped thanos thanos github.com/thanos-io/thanos/cmd/thanos "$THANOS_VERSION" slicelabels

echo "$bin"
