#!/usr/bin/env bash
# Installs Debian's chromium package, which the console's browser tests drive headless (through
# github.com/chromedp/chromedp), unless a chromium is already installed, and links it into the
# peers' bin directory ($1) as `chromium`. apt keeps the downloaded packages in its own cache, so
# a second install on the same machine downloads nothing; an installed chromium costs nothing.
set -euo pipefail
bin=${1:?usage: chromium.sh BIN_DIR}
mkdir -p "$bin"
found=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$found" ]; then
	sudo=()
	if [ "$(id -u)" != 0 ]; then
		if ! command -v sudo >/dev/null; then
			echo "chromium: not installed, and installing Debian's package needs root: apt-get install chromium" >&2
			exit 1
		fi
		sudo=(sudo)
	fi
	start=$SECONDS
	echo "chromium: installing Debian's chromium package" >&2
	export DEBIAN_FRONTEND=noninteractive
	# The package lists are refreshed only when the package is unknown (a fresh image has none).
	if ! apt-cache show chromium >/dev/null 2>&1; then "${sudo[@]}" apt-get update -qq; fi
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
	found=$(command -v chromium)
	echo "chromium: installed in $((SECONDS - start))s" >&2
fi
ln -sfn "$found" "$bin/chromium"
