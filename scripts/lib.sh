# Sourced by the wrappers beside it: find `hsm-vault` and run it, from any directory.
# In the container (or wherever hsm-vault is installed) it is on PATH and VAULT_* come from
# the environment. In a checkout, the checkout's .venv is used, and unless told otherwise
# the checkout's var/ and policies/ (so a wrapper run from elsewhere finds them).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [ -d "$repo/policies" ]; then
  export VAULT_VAR_DIR="${VAULT_VAR_DIR:-$repo/var}"
  export VAULT_POLICIES_DIR="${VAULT_POLICIES_DIR:-$repo/policies}"
  export SOFTHSM2_CONF="${SOFTHSM2_CONF:-$VAULT_VAR_DIR/softhsm2.conf}"
fi
if command -v hsm-vault >/dev/null 2>&1; then
  HSM_VAULT=hsm-vault
elif [ -x "$repo/.venv/bin/hsm-vault" ]; then
  HSM_VAULT="$repo/.venv/bin/hsm-vault"
else
  echo "hsm-vault not found: install it (pip install .) or run 'make setup' in $repo" >&2
  exit 127
fi
