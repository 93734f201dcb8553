#!/bin/sh
# Verifies a fleetwatch webhook delivery with nothing but openssl, as a receiver should before it
# trusts one (hooks/README.md):
#
#   verify.sh SECRET_FILE TIMESTAMP SIGNATURE BODY_FILE
#
# SECRET_FILE holds the receiver's secret (as in fleetwatch's secret_files; surrounding newlines
# are ignored), TIMESTAMP and SIGNATURE are the X-Fleetwatch-Timestamp and X-Fleetwatch-Signature
# headers, BODY_FILE the request body exactly as received. It exits 0 when the timestamp is within
# TOLERANCE seconds (default 300) of NOW (default: this machine's clock), so a captured delivery
# replayed later is refused, and one of the header's v1 signatures is the HMAC-SHA256 of
# "TIMESTAMP.BODY" under the secret. (A shell compares strings in variable time; a receiver in a
# real language compares signatures in constant time, as hooks.Verify does.)
set -eu
[ $# -eq 4 ] || { echo "usage: $0 SECRET_FILE TIMESTAMP SIGNATURE BODY_FILE" >&2; exit 2; }
secret_file=$1 ts=$2 sig=$3 body=$4
now=${NOW:-$(date +%s)}
tolerance=${TOLERANCE:-300}
case $ts in '' | *[!0-9]*) echo "timestamp: '$ts' is not Unix seconds" >&2; exit 1 ;; esac
age=$((now - ts))
if [ "${age#-}" -gt "$tolerance" ]; then
	echo "timestamp: signed ${age}s from now, more than ${tolerance}s: a replay, or a clock off" >&2
	exit 1
fi
secret=$(cat "$secret_file")
expected=$({ printf '%s.' "$ts"; cat "$body"; } | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
for part in $(printf '%s' "$sig" | tr ',' ' '); do
	if [ "$part" = "v1=$expected" ]; then
		echo "signature ok"
		exit 0
	fi
done
echo "signature: none of the v1 signatures matches the body" >&2
exit 1
