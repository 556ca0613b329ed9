#!/usr/bin/env bash
# Dual control: approve a pending request with your own key ($VAULT_OFFICER_KEY).
# usage: scripts/approve.sh REQUEST_ID       (list them: scripts/hsm-vault approvals list)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
exec "$HSM_VAULT" approvals approve "$@"
