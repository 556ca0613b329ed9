"""hsm-vault's domain: keys, envelopes, OTP, signatures, policies. Never imports ``pkcs11``."""
