"""The HTTP API (Litestar): Vault Transit's shapes over the vault's domain."""
