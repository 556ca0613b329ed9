#!/usr/bin/env bash
# Rewrap stored ciphertexts to a key's latest version; resumable (run it again after a stop).
# usage: scripts/rewrap.sh KEY_NAME --in old.jsonl --out new.jsonl
#        scripts/rewrap.sh KEY_NAME --database-url URL --table T --column C [--id-column id]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec "$HSM_VAULT" keys rewrap "$@"
