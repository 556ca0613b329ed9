"""``make bench``: the vault's throughput beside its ceilings (raw PKCS#11, a bare Litestar
endpoint) and beside OpenBao Transit, on this machine. Entry point: ``python -m bench.run``."""
