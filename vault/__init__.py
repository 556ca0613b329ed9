"""hsm-vault's domain: keys and versions, envelopes, signatures, OTP, partners, policies."""

VERSION = "0.2.0"
# The Vault (OpenBao) release whose Transit API this service follows (docs/transit-reference.md).
VAULT_API_VERSION = "2.7.2"
