#!/usr/bin/env bash
# Rotate one key directly on the HSM and the database (a security officer's routine task).
# The PIN comes from VAULT_PIN or VAULT_PIN_FILE, never from the command line.
# usage: scripts/rotate-key.sh KEY_NAME
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -ne 1 ]; then
  echo "usage: $0 KEY_NAME" >&2
  exit 2
fi
# hsm-vault from PATH (the container image installs it there); in a development checkout,
# the project's .venv comes first.
if [ -x .venv/bin/hsm-vault ]; then
  PATH="$PWD/.venv/bin:$PATH"
fi
exec hsm-vault keys rotate "$1"
