#!/usr/bin/env bash
# Compare the HSM's objects with the key registry; --repair fixes what is found.
# usage: scripts/reconcile.sh [--repair] [--json] [--dry-run]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec "$HSM_VAULT" keys reconcile "$@"
