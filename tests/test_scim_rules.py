"""The SCIM target's rules without a server: attribute paths, filter quoting, the mapping section's
validation (errors that name the entry) and the settings it needs."""

from __future__ import annotations

import pytest
from scim2_models import ScimFilter
from scim2_models.path.filter import Comparison

from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError
from shared.settings import Settings, SettingsError
from shared.targets.registry import check_settings
from shared.targets.scim import paths
from shared.targets.scim.filters import eq, quote
from tests.support import sandbox_env

G1, G2 = "00000001-1111-4222-8333-444444444444", "00000002-1111-4222-8333-444444444444"
ENTERPRISE = paths.ENTERPRISE


def section(body: str) -> str:
    return f"version: 2\ntargets:\n  scim:crm:\n{body}"


GOOD = """\
    base_url: https://crm.example/scim/v2
    token_setting: SCIM_CRM_TOKEN
    attributes:
      - {source: userPrincipalName, target: userName}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        parse_mapping(text, source="m.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("userName", ("", "userName", "", "")),
        ("name.givenName", ("", "name", "", "givenName")),
        ('emails[type eq "work"].value', ("", "emails", "work", "value")),
        ('phoneNumbers[type eq "mobile"].value', ("", "phoneNumbers", "mobile", "value")),
        (f"{ENTERPRISE}:department", (ENTERPRISE, "department", "", "")),
        (f"{ENTERPRISE}:manager.value", (ENTERPRISE, "manager", "", "value")),
    ],
)
def test_the_paths_a_section_may_write(text: str, where: tuple[str, str, str, str]) -> None:
    path = paths.must(text)
    assert (path.extension, path.attribute, path.type, path.sub) == where


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("externalId", "cannot be mapped"),
        ("id", "cannot be mapped"),
        ("groups", "cannot be mapped"),
        ("emails", "multi-valued"),
        ("emails[type eq work].value", "not a SCIM attribute path"),
        ("nmae.givenName", "not an attribute"),
        (f"{ENTERPRISE}:departmnet", "the enterprise extension has"),
        ("userName) or (x", "not a SCIM attribute path"),
    ],
)
def test_a_path_the_target_cannot_write_says_why(text: str, says: str) -> None:
    problem = paths.parse(text)
    assert isinstance(problem, str) and says in problem


def test_values_are_written_and_read_back_through_their_paths() -> None:
    email, given, dept = (paths.must(p) for p in ('emails[type eq "work"].value', "name.givenName",
                                                  f"{ENTERPRISE}:department"))  # fmt: skip
    body = paths.build({email: "ada@contoso.example", given: "Ada", dept: "Research"})
    assert paths.read(body, email) == "ada@contoso.example"
    assert paths.read(body, given) == "Ada" and paths.read(body, dept) == "Research"
    merged = paths.merged(body, {dept: "Finance", given: None})
    assert paths.read(merged, dept) == "Finance" and paths.read(merged, given) is None
    assert paths.read(body, dept) == "Research"  # the original is left as it was


@pytest.mark.parametrize("value", ['x" or userName pr or "', 'a\\" or "1"="1', "new\nline", "plain@contoso.example"])
def test_a_quoted_value_is_one_comparison_that_matches_only_itself(value: str) -> None:
    ast = ScimFilter(eq("userName", value)).ast
    assert isinstance(ast, Comparison) and ast.value == value
    assert quote(value).startswith('"') and quote(value).endswith('"')


def test_an_attribute_name_is_never_taken_from_input() -> None:
    with pytest.raises(ValueError, match="not a filterable attribute"):
        eq("userName pr or userName", "x")


def test_a_good_section_loads_with_its_defaults() -> None:
    scim = parse_mapping(section(GOOD)).target("scim:crm")
    assert scim.kind == "scim" and scim.options.base_url == "https://crm.example/scim/v2"
    assert scim.options.token_setting == "SCIM_CRM_TOKEN"
    assert scim.matching == ("link", "externalId", "userName")
    assert (scim.deprovision.action, scim.deprovision.hard_delete) == ("disable", "delete")
    assert scim.options.delete_unmapped_groups is False


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        (("token_setting: SCIM_CRM_TOKEN", "token_setting: s3cr3t-value"), "token_setting", "never goes in"),
        (("    token_setting: SCIM_CRM_TOKEN\n", ""), "token_setting", "SCIM_<NAME>_TOKEN"),
        (("https://crm.example", "http://crm.example"), "base_url", "https"),
        (("https://crm.example/scim/v2", "crm.example"), "base_url", "https"),
        (("    base_url: https://crm.example/scim/v2\n", ""), "base_url", "non-empty"),
        (("target: userName", "target: externalId"), "attributes[0]", "cannot be mapped"),
        (("target: userName", "target: nmae.givenName"), "attributes[0]", "not an attribute"),
    ],
)
def test_a_bad_section_is_refused_naming_the_entry(change: tuple[str, str], where: str, says: str) -> None:
    found = problems(section(GOOD.replace(*change)))
    assert any(f"targets.scim:crm.{where}" in p and says in p for p in found), found


def test_each_group_entry_pushes_exactly_one_scim_group_and_each_once() -> None:
    groups = f"""\
    groups:
      - {{group: {G1}, groups: [Staff, Everyone]}}
      - {{group: {G2}, groups: [Sales]}}
      - {{group: {G2}, groups: [sales]}}
"""
    found = problems(section(GOOD + groups))
    assert any("groups[0].groups" in p and "exactly one SCIM group" in p for p in found), found
    assert any("groups[2].groups" in p and "pushed by entry 1" in p for p in found), found
    assert any("groups[2].group" in p and "pushed by entry 1" in p for p in found), found


def test_a_plain_http_base_url_is_accepted_for_loopback_only() -> None:
    text = section(GOOD.replace("https://crm.example", "http://127.0.0.1:8443"))
    assert parse_mapping(text).target("scim:crm").options.base_url == "http://127.0.0.1:8443/scim/v2"


def test_the_token_setting_the_section_names_is_required_and_kept_secret() -> None:
    scim = parse_mapping(section(GOOD)).target("scim:crm")
    env = sandbox_env(storage="UseDevelopmentStorage=true")
    with pytest.raises(SettingsError, match="SCIM_CRM_TOKEN is required"):
        check_settings(Settings.from_env(env), [scim])
    settings = Settings.from_env(env | {"SCIM_CRM_TOKEN": "tok-123456"})
    check_settings(settings, [scim])
    token = settings.scim_tokens["SCIM_CRM_TOKEN"]
    assert "tok-123456" not in repr(token) and "tok-123456" not in str(settings)


def test_a_token_setting_that_is_still_a_key_vault_reference_says_so() -> None:
    scim = parse_mapping(section(GOOD)).target("scim:crm")
    env = sandbox_env(storage="UseDevelopmentStorage=true")
    unresolved = env | {"SCIM_CRM_TOKEN": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/crm)"}
    with pytest.raises(SettingsError, match="SCIM_CRM_TOKEN is an unresolved Key Vault reference"):
        check_settings(Settings.from_env(unresolved), [scim])
    with pytest.raises(SettingsError, match="printable ASCII"):
        check_settings(Settings.from_env(env | {"SCIM_CRM_TOKEN": "two words"}), [scim])
