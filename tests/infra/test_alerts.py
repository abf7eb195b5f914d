"""The alert rules read the metrics the app emits, with the conditions and thresholds the issue
names, and reach the operators through the action group; the workbook shows every metric.

The rules are evaluated from infra/app/alerts.bicep (tests/infra/evaluate.py); the metric names
are the ones :class:`shared.observe.Observe` creates, read from an in-memory reader, so a renamed
metric fails here rather than leaving a rule that never fires.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.observe import Observe
from tests.infra.bicep import INFRA, load, path, resource
from tests.infra.evaluate import Evaluator, module_params

# condition -> (rule, metric, operator, threshold, dimension)
CONDITIONS = {
    "poison depth above zero": ("poison-depth", "entra_sync.poison.depth", "GreaterThan", 0, "queue"),
    "a held run or mass-change episode": ("held", "entra_sync.holds", "GreaterThan", 0, "target"),
    "a failed or missing nightly reconciliation": (
        "reconcile-failed-or-missing", "entra_sync.reconcile.runs", "GreaterThan", 0, ""),
    "a subscription within 48 h of expiry": (
        "subscription-expiry", "entra_sync.subscription.hours_left", "LessThan", 48, "resource"),
    "a quarantined target": ("target-quarantined", "entra_sync.target.quarantined", "GreaterThan", 0, "target"),
    "lane age above a threshold": ("lane-age", "entra_sync.queue.age", "GreaterThan", 60, "queue"),
}  # fmt: skip


def rules(**given: Any) -> dict[str, dict[str, Any]]:
    alerts = load("app/alerts.bicep")
    evaluated = Evaluator(alerts, given).symbol("rules")
    return {rule["name"]: rule for rule in evaluated}


def emitted_metric_names() -> set[str]:
    reader = InMemoryMetricReader()
    observe = Observe(meter_provider=MeterProvider(metric_readers=[reader]))
    for name, instrument in vars(observe).items():
        if name == "tracer":
            continue
        if hasattr(instrument, "add"):
            instrument.add(1, {})
        elif hasattr(instrument, "record"):
            instrument.record(1.0, {})
        else:
            instrument.set(1, {})
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_each_condition_has_a_rule_on_the_metric_the_app_emits_with_its_threshold(condition: str) -> None:
    name, metric, operator, threshold, dimension = CONDITIONS[condition]
    rule = rules()[name]
    assert f'where name == "{metric}"' in rule["query"]
    assert metric in emitted_metric_names()
    assert (rule["operator"], rule["threshold"], rule["dimension"]) == (operator, threshold, dimension)
    # The measured column and the dimension are what the query yields.
    assert re.search(rf"\b{rule['measure']} = ", rule["query"]), rule["query"]
    if dimension:
        assert re.search(rf"by {dimension}\b", rule["query"]), rule["query"]


def test_thresholds_follow_their_parameters() -> None:
    assert rules(laneAgeThresholdSeconds=5)["lane-age"]["threshold"] == 5
    assert rules(subscriptionHoursThreshold=72)["subscription-expiry"]["threshold"] == 72
    assert 'where queue == "sync-lane"' in rules()["lane-age"]["query"]  # the lane, not the bulk queue
    # A missing run is a problem too: no row at all still yields one with finished == 0.
    query = rules()["reconcile-failed-or-missing"]["query"]
    assert "finished == 0" in query and "failed > 0" in query and "print finished = 0.0" in query
    assert rules()["reconcile-failed-or-missing"]["window"] == "PT26H"  # a night and some slack


def test_every_rule_fires_through_the_action_group_with_email_and_webhook_receivers() -> None:
    alerts = load("app/alerts.bicep")
    evaluator = Evaluator(alerts, {"alertEmails": ["ops@contoso.com", "sec@contoso.com"],
                                   "alertWebhookUrl": "https://hooks.example.com/x"})  # fmt: skip
    (group,) = [r for r in alerts.resources() if r.type == "Microsoft.Insights/actionGroups"]
    receivers = evaluator.eval(path(alerts, group.body, "properties"))
    assert [r["emailAddress"] for r in receivers["emailReceivers"]] == ["ops@contoso.com", "sec@contoso.com"]
    assert [r["serviceUri"] for r in receivers["webhookReceivers"]] == ["https://hooks.example.com/x"]
    assert "secure" in alerts.params()["alertWebhookUrl"]["decorators"]
    (rule,) = [r for r in alerts.resources() if r.type == "Microsoft.Insights/scheduledQueryRules"]
    assert alerts.text(path(alerts, rule.body, "properties", "actions", "actionGroups")).split() == [
        "[",
        "actionGroup.id",
        "]",
    ]
    assert alerts.text(path(alerts, rule.body, "properties", "scopes")).split() == ["[", "appInsights.id", "]"]


def test_main_passes_the_operators_addresses_from_azd() -> None:
    main = load("main.bicep")
    top = Evaluator(main, {"alertEmails": " ops@contoso.com, ,sec@contoso.com"})
    params = {name: top.eval(node) for name, node in module_params(main, "alerts").items()}
    assert params["alertEmails"] == ["ops@contoso.com", "sec@contoso.com"]
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["alertEmails"] == {"value": "${ENTRA_SYNC_ALERT_EMAILS}"}
    assert values["alertWebhookUrl"] == {"value": "${ENTRA_SYNC_ALERT_WEBHOOK_URL}"}


def test_the_workbook_shows_every_metric() -> None:
    _, workbook = resource("Microsoft.Insights/workbooks")
    assert "loadTextContent('workbook.json')" in load("app/alerts.bicep").text(workbook.body)
    items = json.loads((INFRA / "app" / "workbook.json").read_text())["items"]
    queries = " ".join(item["content"].get("query", "") for item in items)
    for metric in emitted_metric_names():
        assert f'"{metric}"' in queries, metric
