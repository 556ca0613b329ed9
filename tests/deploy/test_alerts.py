"""deploy/alerts.yml: well-formed, built on metrics the service really exports, and (with
``promtool``, which .ci/run installs) valid Prometheus rules whose own tests pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from api import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "alerts.yml"


def _rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _exported() -> set[str]:
    """Every sample name the service's metrics export."""
    names: set[str] = set()
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        family = metric.describe()[0]
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_count", "_sum"],
            "gauge": [""],
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_rule_is_complete() -> None:
    rules = _rules()
    assert any(rule.get("alert") == "BackupShareRetrievalRateHigh" for rule in rules)
    assert any(rule.get("alert") == "VaultDown" for rule in rules)
    for rule in rules:
        assert isinstance(rule.get("expr"), str)
        assert ("alert" in rule) != ("record" in rule), rule
        if "alert" in rule:
            labels, annotations = rule["labels"], rule["annotations"]
            assert isinstance(labels, dict)
            assert isinstance(annotations, dict)
            assert labels["severity"] in ("page", "ticket")
            assert annotations["summary"]


def test_the_rules_use_only_metrics_the_service_exports() -> None:
    exported = _exported()
    used = {
        name for rule in _rules() for name in re.findall(r"(?<![\w:])vault_\w+", str(rule["expr"]))
    }
    assert used
    assert used <= exported, used - exported


def test_promtool_checks_the_rules_and_their_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    for args in (["check", "rules", RULES.name], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(
            [promtool, *args], check=False, cwd=DEPLOY, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
