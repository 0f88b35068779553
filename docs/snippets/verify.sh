#!/usr/bin/env bash
# Verify a Relay delivery with openssl: Standard Webhooks v1 (HMAC-SHA256), whsec_ secret.
# usage: verify.sh SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]
set -euo pipefail
secret=$1 id=$2 ts=$3 sigs=$4 body=$5 now=${6:-$(date +%s)}
[[ $ts =~ ^[0-9]+$ ]] && (( ${now%.*} - ts <= 300 && ts - ${now%.*} <= 300 )) || { echo invalid >&2; exit 1; }
key_hex=$(printf '%s' "${secret#whsec_}" | base64 -d | xxd -p -c 256)
expected=$( { printf '%s.%s.' "$id" "$ts"; cat "$body"; } \
  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64 -w0)
for entry in $sigs; do
  [[ $entry == *,* ]] || { echo invalid >&2; exit 1; }
  [[ $entry == "v1,$expected" ]] && { echo valid >&2; exit 0; }
done
echo invalid >&2; exit 1
