#!/usr/bin/env bash
# Installs the real peer binaries that fleetwatch's integration and end-to-end tests run
# (prometheus, promtool, alertmanager, amtool, thanos; for the lab's control planes etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kube-state-metrics) from the
# Go module proxy into a cache directory outside the clone. A binary that is already there is not
# built again, so a second run costs seconds. Independent builds run two at a time (the go command
# already compiles a build's packages in parallel; two builds overlap one's linking with the
# other's compiling). Prints the bin directory on its last line.
#
#   FLEETWATCH_PEERS_DIR  cache root (default: $HOME/.cache/fleetwatch/peers)
set -euo pipefail

PROMETHEUS_VERSION=v0.309.1
ALERTMANAGER_VERSION=v0.30.0
THANOS_VERSION=v0.42.4
KUBERNETES_VERSION=v1.34.3
ETCD_VERSION=v3.6.6
KUBE_STATE_METRICS_VERSION=v2.18.0

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

# install_wrapped_many builds several commands of one wrapper module in one go build, so they
# share the compilation of their packages (the Kubernetes commands share most of theirs).
install_wrapped_many() { # wrapper-dir version package...
	local wrapper=$1 version=$2 dir="$root/$1-$2" missing=0
	shift 2
	for pkg in "$@"; do [ -x "$dir/${pkg##*/}" ] || missing=1; done
	if [ $missing = 1 ]; then
		echo "peers: building ${*##*/} $version" >&2
		local start=$SECONDS
		mkdir -p "$dir.tmp"
		(cd "$here/peers/$wrapper" && go build -o "$dir.tmp/" "$@")
		mkdir -p "$dir"
		for pkg in "$@"; do mv "$dir.tmp/${pkg##*/}" "$dir/${pkg##*/}"; done
		rmdir "$dir.tmp"
		echo "peers: built ${*##*/} in $((SECONDS - start))s" >&2
	fi
	for pkg in "$@"; do ln -sfn "$dir/${pkg##*/}" "$bin/${pkg##*/}"; done
}

# Two builds at a time; each job's output goes to its own log, printed when it ends.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
declare -A running=()
failed=0
job() { # name command...
	local name=$1
	shift
	"$@" >"$logs/$name" 2>&1 &
	running[$!]=$name
	if [ ${#running[@]} -ge 2 ]; then reap; fi
}
reap() { # waits for whichever job ends first
	local pid rc=0
	wait -n -p pid "${!running[@]}" || rc=$?
	local name=${running[$pid]}
	unset "running[$pid]"
	if [ $rc != 0 ]; then
		echo "peers: $name failed:" >&2
		failed=1
	fi
	cat "$logs/$name" >&2
}
prometheus_tools() {
	install_wrapped prometheus prometheus github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION"
	install_wrapped promtool prometheus github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION"
}
alertmanager_tools() {
	install_go alertmanager github.com/prometheus/alertmanager/cmd/alertmanager "$ALERTMANAGER_VERSION"
	install_go amtool github.com/prometheus/alertmanager/cmd/amtool "$ALERTMANAGER_VERSION"
	install_wrapped etcd etcd github.com/fleetwatch/fleetwatch/hack/peers/etcd/cmd/etcd "$ETCD_VERSION"
}
kubernetes_tools() {
	install_wrapped_many kubernetes "$KUBERNETES_VERSION" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
	# After the Kubernetes commands: the same client-go and apimachinery, from the build cache.
	install_wrapped kube-state-metrics kube-state-metrics k8s.io/kube-state-metrics/v2 "$KUBE_STATE_METRICS_VERSION"
}
job kubernetes kubernetes_tools
job prometheus prometheus_tools
job alertmanager alertmanager_tools
# Thanos is built with the slicelabels tag, as its own release build (.promu.yml) is: its
# labelpb package assumes that layout, and a stringlabels build panics in the sidecar.
job thanos install_wrapped thanos thanos github.com/thanos-io/thanos/cmd/thanos "$THANOS_VERSION" slicelabels
while [ ${#running[@]} -gt 0 ]; do reap; done
[ $failed = 0 ] || exit 1

echo "$bin"
