"""Shared by the OTP tests: the RFC vector files, and a host-side stand-in for the HSM."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

from vault.otp import VerifyPlan

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def host_macs(secret: bytes, plan: VerifyPlan) -> list[bytes]:
    """MAC every planned message with ``secret``, as the HSM does with the seed it keeps."""
    return [hmac.new(secret, c.message, plan.algorithm).digest() for c in plan.candidates]
