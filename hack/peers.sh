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
install_go() { # version module package...: go install of commands of one module
	local version=$1 module=$2 dir="$root/${2##*/}-$1" missing=0
	shift 2
	for pkg in "$@"; do [ -x "$dir/${pkg##*/}" ] || missing=1; done
	if [ $missing = 1 ]; then
		echo "peers: building ${*##*/} $version" >&2
		local start=$SECONDS
		GOBIN="$dir" go install -ldflags='-s -w' "${@/%/@$version}"
		echo "peers: built ${*##*/} in $((SECONDS - start))s" >&2
	fi
	for pkg in "$@"; do ln -sfn "$dir/${pkg##*/}" "$bin/${pkg##*/}"; done
}

# Prometheus, Thanos, etcd and the Kubernetes commands refuse `go install` (exclude and replace
# directives in their go.mod, or none published), so they are built from our wrapper modules under
# hack/peers/, which carry those directives and a go.sum that pins every dependency.
#
# build_wrapped builds one or more commands of a wrapper module in one go build, so they share the
# compilation of their packages (the Kubernetes commands share most of theirs) and link in
# parallel. Peers are linked without symbol tables and DWARF (-s -w, as release builds are): the
# tests never debug them, and the linker does less. A build with a trim function builds against
# a copy of one dependency's released source that the function edited (see trim_copy).
build_wrapped() { # dir-name wrapper tags trim-module trim-function package...
	local dir="$root/$1" wrapper=$2 tags=$3 trim_module=$4 trim_fn=$5 missing=0
	shift 5
	for pkg in "$@"; do [ -x "$dir/$(cmd_name "$pkg")" ] || missing=1; done
	if [ $missing = 1 ]; then
		local names=() start=$SECONDS modfile=()
		for pkg in "$@"; do names+=("$(cmd_name "$pkg")"); done
		echo "peers: building ${names[*]} ($1)" >&2
		if [ -n "$trim_module" ]; then
			modfile=("-modfile=$(trim_copy "$wrapper" "$trim_module" "$trim_fn")")
		fi
		rm -rf "$dir.tmp"
		mkdir -p "$dir.tmp"
		(cd "$here/peers/$wrapper" && go build "${modfile[@]}" -tags "$tags" -ldflags='-s -w' -o "$dir.tmp/" "$@")
		mkdir -p "$dir"
		for name in "${names[@]}"; do mv "$dir.tmp/$name" "$dir/$name"; done
		rmdir "$dir.tmp"
		echo "peers: built ${names[*]} in $((SECONDS - start))s" >&2
	fi
	for pkg in "$@"; do ln -sfn "$dir/$(cmd_name "$pkg")" "$bin/$(cmd_name "$pkg")"; done
}
cmd_name() { # the binary go build names after a package path (a major-version suffix is not it)
	local name=${1##*/}
	if [[ $name =~ ^v[0-9]+$ ]]; then name=${1%/*} && name=${name##*/}; fi
	echo "$name"
}

# trim_copy copies a dependency's released source (the version the wrapper module requires) out of
# the module cache into a scratch directory, lets a function edit the copy, and prints the path of a
# go.mod for the wrapper that replaces the dependency with the copy. The wrapper's own files are
# not touched. This is how Prometheus documents building with fewer service discoveries (edit
# plugins.yml, regenerate plugins/plugins.go): the peers here only need what the tests use, and
# every dropped cloud SDK is compile time saved on a fresh machine.
trim_copy() { # wrapper module function
	local wrapper=$1 module=$2 fn=$3 scratch="$logs/trim-$1" src
	src=$(cd "$here/peers/$wrapper" && go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "peers: no source for $module" >&2 && return 1; }
	rm -rf "$scratch"
	mkdir -p "$scratch"
	cp -r "$src" "$scratch/src"
	chmod -R u+w "$scratch/src"
	"$fn" "$scratch/src"
	cp "$here/peers/$wrapper/go.mod" "$here/peers/$wrapper/go.sum" "$scratch/"
	go mod edit -modfile="$scratch/go.mod" -replace "$module=$scratch/src"
	echo "$scratch/go.mod"
}
# Prometheus with the file and http service discoveries only (plugins/minimum.go); the tests
# configure static targets. Drops the AWS, Azure, GCE, Kubernetes... clients.
prometheus_minimal_sd() { # src
	printf '// Rewritten by fleetwatch hack/peers.sh: no service discovery beyond plugins/minimum.go.\npackage plugins\n' >"$1/plugins/plugins.go"
}
# Thanos's object storage client with the filesystem provider only, the one the tests use. Drops
# the S3, GCS, Azure, OCI... SDKs. The sed fails the build loudly if a new release moves things.
objstore_filesystem_only() { # src
	local f="$1/client/factory.go" providers='GCS|S3|AZURE|SWIFT|COS|ALIYUNOSS|BOS|OCI|OBS'
	# Only the GCS case used the context package.
	sed -i -E "/objstore\/providers\/(azure|bos|cos|gcs|obs|oci|oss|s3|swift)\"/d; /^\t\"context\"$/d; /case string\(objstore\.($providers)\):/,+1d" "$f"
	if grep -Eq "objstore\.($providers)\)|providers/(s3|gcs)\"" "$f"; then
		echo "peers: could not trim $f" >&2
		return 1
	fi
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
	build_wrapped "prometheus-$PROMETHEUS_VERSION-minimal-sd" prometheus "" \
		github.com/prometheus/prometheus prometheus_minimal_sd \
		github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
}
alertmanager_tools() {
	install_go "$ALERTMANAGER_VERSION" github.com/prometheus/alertmanager \
		github.com/prometheus/alertmanager/cmd/alertmanager github.com/prometheus/alertmanager/cmd/amtool
	build_wrapped "etcd-$ETCD_VERSION" etcd "" "" "" github.com/fleetwatch/fleetwatch/hack/peers/etcd/cmd/etcd
}
kubernetes_tools() {
	build_wrapped "kubernetes-$KUBERNETES_VERSION" kubernetes "" "" "" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
	# After the Kubernetes commands: the same client-go and apimachinery, from the build cache.
	build_wrapped "kube-state-metrics-$KUBE_STATE_METRICS_VERSION" kube-state-metrics "" "" "" \
		k8s.io/kube-state-metrics/v2
}
# Thanos is built with the slicelabels tag, as its own release build (.promu.yml) is: its
# labelpb package assumes that layout, and a stringlabels build panics in the sidecar.
thanos_tools() {
	build_wrapped "thanos-$THANOS_VERSION-slicelabels-filesystem" thanos slicelabels \
		github.com/thanos-io/objstore objstore_filesystem_only github.com/thanos-io/thanos/cmd/thanos
}
# Debian's chromium for the console's browser tests: a download and an unpack, not a build, so it
# runs beside the two build slots.
bash "$here/chromium.sh" "$bin" >"$logs/chromium" 2>&1 &
chromium_pid=$!
job kubernetes kubernetes_tools
job prometheus prometheus_tools
job alertmanager alertmanager_tools
job thanos thanos_tools
while [ ${#running[@]} -gt 0 ]; do reap; done
if ! wait $chromium_pid; then
	echo "peers: chromium failed:" >&2
	failed=1
fi
cat "$logs/chromium" >&2
[ $failed = 0 ] || exit 1

echo "$bin"
