#!/usr/bin/env bash
# Rotate one key (a security officer's routine task). Who you are: $VAULT_OFFICER_KEY.
# PINs come from the environment, a PIN file or a prompt, never the command line.
# usage: scripts/rotate-key.sh KEY_NAME [--dry-run]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "$#" -lt 1 ]; then
  echo "usage: $0 KEY_NAME [--dry-run]" >&2
  exit 2
fi
exec "$HSM_VAULT" keys rotate "$@"
