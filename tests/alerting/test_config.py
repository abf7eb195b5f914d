"""The mapping's ``alerts:`` section: what it may say, every problem named at its entry, the JSON
Schema agreeing with the loader, and the secrets it names read from settings (never the file)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
import yaml

from shared.alerting.build import check_alert_settings
from shared.alerting.config import Route
from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError
from shared.mapping.schema import mapping_schema
from shared.settings import Settings, SettingsError
from tests.support import sandbox_env

BASE = "version: 2\ntargets:\n  auth0:\n    attributes:\n      - {source: mail, target: email}\n"
ALERTS = """
alerts:
  links: {report: "https://ops.example/reports/{run_id}", audit: "https://ops.example/audit/{correlation_id}"}
  channels:
    secops: {kind: slack, url_setting: ALERTS_SLACK_URL}
    it-ops: {kind: teams, url_setting: ALERTS_TEAMS_URL}
    hook: {kind: webhook, url_setting: ALERTS_HOOK_URL, secret_setting: ALERTS_HOOK_KEY}
    mail: {kind: email, mailbox: entra-sync@contoso.example, to: [secops@contoso.example]}
    itsm: {kind: servicenow, url_setting: ALERTS_SNOW_URL, user_setting: ALERTS_SNOW_USER,
           password_setting: ALERTS_SNOW_PASSWORD, table: incident}
    jira: {kind: jira, url_setting: ALERTS_JIRA_URL, email_setting: ALERTS_JIRA_EMAIL,
           token_setting: ALERTS_JIRA_TOKEN, project: IT}
  routes:
    - {kinds: [risk], min_severity: medium, channels: [secops, mail]}
    - {kinds: [held, failed_run, poison, quarantine], channels: [it-ops, hook]}
    - {kinds: [findings], channels: [itsm, jira], tickets: identity}
  digest: {window_minutes: 5, burst: 2}
  events: {url_setting: EVENTS_URL, secret_setting: EVENTS_SIGNING_KEY, max_attempts: 6}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        parse_mapping(text, source="m.yaml")
    return info.value.problems


def test_a_full_section_reads_as_channels_routes_digest_links_and_event_feed() -> None:
    alerts = parse_mapping(BASE + ALERTS).alerts
    assert alerts is not None
    assert [(c.name, c.kind) for c in alerts.channels.values()] == [
        ("secops", "slack"), ("it-ops", "teams"), ("hook", "webhook"), ("mail", "email"), ("itsm", "servicenow"),
        ("jira", "jira"),
    ]  # fmt: skip
    assert alerts.channels["hook"].settings == {"url_setting": "ALERTS_HOOK_URL", "secret_setting": "ALERTS_HOOK_KEY"}
    assert alerts.channels["mail"].options == {
        "mailbox": "entra-sync@contoso.example",
        "to": ("secops@contoso.example",),
    }
    assert alerts.routes[0] == Route(("risk",), ("secops", "mail"), "medium", "class", "routes[0]")
    assert alerts.routes[2].tickets == "identity"
    assert (alerts.digest.window_s, alerts.digest.burst) == (300.0, 2)
    assert alerts.events is not None and alerts.events.max_attempts == 6
    assert alerts.routes[0].takes("risk", "high") and not alerts.routes[0].takes("risk", "low")


def test_a_file_without_the_section_has_none_and_a_version_1_file_cannot_have_it() -> None:
    assert parse_mapping(BASE).alerts is None
    v1 = "version: 1\nattributes:\n  - {source: mail, target: email}\n" + ALERTS
    assert any(p.startswith("alerts: unknown section") for p in problems(v1))


def test_every_problem_is_named_at_its_entry() -> None:
    bad = """
alerts:
  channels:
    Bad_Name: {kind: slack, url_setting: ALERTS_X}
    pager: {kind: pagerduty}
    secops: {kind: slack, url: "https://hooks.slack.com/services/T/B/secret"}
    mail: {kind: email, mailbox: not-an-address, to: [nobody]}
    snow: {kind: servicenow, url_setting: AZURE_CLIENT_SECRET, user_setting: ALERTS_U, password_setting: ALERTS_P}
  routes:
    - {kinds: [risk, weather], channels: [secops, nowhere], min_severity: severe}
    - {kinds: [poison], channels: [snow]}
  digest: {window_minutes: 0, burst: 1.5}
  links: {report: "http://plain.example/{run}"}
"""
    found = problems(BASE + bad)
    for expected in [
        "alerts.channels.Bad_Name: a channel name is lower-case",
        "alerts.channels.pager.kind: must be one of slack, teams, webhook, email, servicenow, jira",
        "alerts.channels.secops.url: unknown key",
        "alerts.channels.secops.url_setting: is required for a slack channel",
        "alerts.channels.mail.mailbox: must be the sending mailbox",
        "alerts.channels.mail.to[0]: must be an email address",
        "alerts.channels.snow.url_setting: names the app setting that holds the secret (ALERTS_<NAME>",
        "alerts.routes[0].kinds[1]: must be one of risk, held, failed_run, poison, quarantine, findings",
        "alerts.routes[0].channels[1]: 'nowhere' is not a channel of alerts.channels",
        "alerts.routes[0].min_severity: must be one of low, medium, high",
        "alerts.routes[1].channels[0]: snow opens tickets, which only findings do",
        "alerts.digest.window_minutes: must be a number from 1 to 1440",
        "alerts.digest.burst: must be a whole number",
        "alerts.links.report: must be an https URL template",
    ]:
        assert any(p.startswith(expected) for p in found), (expected, found)
    assert not any("secret" in p and "hooks.slack.com" in p for p in found if "unknown key" not in p)


def _with_surprise(data: dict[str, Any], path: str) -> dict[str, Any]:
    node: Any = data
    for part in path.split("/"):
        node = node[int(part)] if part.isdigit() else node[part]
    node["surprise"] = 1
    return data


@pytest.mark.parametrize(
    "place",
    [
        "alerts",
        "alerts/channels/secops",
        "alerts/channels/mail",
        "alerts/routes/0",
        "alerts/digest",
        "alerts/links",
        "alerts/events",
    ],
)
def test_the_schema_takes_the_section_and_refuses_an_unknown_key_where_the_loader_does(place: str) -> None:
    data = yaml.safe_load(BASE + ALERTS)
    validator = jsonschema.Draft202012Validator(mapping_schema())
    assert [e.message for e in validator.iter_errors(data)] == []
    changed = _with_surprise(copy.deepcopy(data), place)
    assert list(validator.iter_errors(changed))
    with pytest.raises(MappingError, match="unknown key"):
        parse_mapping(json.dumps(changed), json_only=True)


def settings(**extra: str) -> Settings:
    return Settings.from_env(sandbox_env(storage="UseDevelopmentStorage=true", **extra))


def test_the_secrets_a_section_names_come_from_settings_and_every_missing_one_is_named() -> None:
    alerts = parse_mapping(BASE + ALERTS).alerts
    with pytest.raises(SettingsError) as info:
        check_alert_settings(
            settings(
                ALERTS_SLACK_URL="http://hooks.example/not-loopback",
                ALERTS_TEAMS_URL="@Microsoft.KeyVault(SecretUri=x)",
            ),
            alerts,
        )
    text = str(info.value)
    assert "ALERTS_SLACK_URL must use https" in text and "hooks.example" not in text  # a webhook URL is a secret
    assert "ALERTS_TEAMS_URL is an unresolved Key Vault reference" in text
    for setting in ("ALERTS_HOOK_URL", "ALERTS_HOOK_KEY", "ALERTS_SNOW_PASSWORD", "ALERTS_JIRA_TOKEN", "EVENTS_URL"):
        assert f"{setting} is required: the mapping's alerts." in text


def test_the_event_feed_goes_to_an_event_grid_topic_with_kind_event_grid_and_a_mismatch_stops_the_app() -> None:
    grid = ALERTS.replace("events: {url_setting", "events: {kind: event_grid, url_setting")
    events = parse_mapping(BASE + grid).alerts.events  # type: ignore[union-attr]
    assert events is not None and events.kind == "event_grid"
    assert parse_mapping(BASE + ALERTS).alerts.events.kind == "http"  # type: ignore[union-attr]
    assert any("alerts.events.kind" in p for p in problems(BASE + ALERTS.replace("events: {", "events: {kind: grid, ")))
    jsonschema.validate(yaml.safe_load(BASE + grid), mapping_schema())
    topic = "https://evgt-abc.westeurope-1.eventgrid.azure.net/api/events"
    http = parse_mapping(BASE + ALERTS).alerts
    rest = {"ALERTS_SLACK_URL": "https://hooks.example/s", "ALERTS_TEAMS_URL": "https://hooks.example/t",
            "ALERTS_HOOK_URL": "https://hooks.example/h", "ALERTS_HOOK_KEY": "k", "ALERTS_SNOW_URL": "https://snow.example",
            "ALERTS_SNOW_USER": "u", "ALERTS_SNOW_PASSWORD": "p", "ALERTS_JIRA_URL": "https://jira.example",
            "ALERTS_JIRA_EMAIL": "e@x.example", "ALERTS_JIRA_TOKEN": "t", "EVENTS_SIGNING_KEY": "s"}  # fmt: skip
    with pytest.raises(SettingsError, match=r"EVENTS_URL is an Event Grid topic endpoint.*set kind: event_grid"):
        check_alert_settings(settings(**rest, EVENTS_URL=topic), http)
    check_alert_settings(settings(**rest, EVENTS_URL="https://events.example/in"), http)  # a signed endpoint: fine
    check_alert_settings(settings(**rest, EVENTS_URL=topic), parse_mapping(BASE + grid).alerts)
