"""The SOQL subset of the Salesforce emulator, on plain records: literals, precedence, LIKE."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import soql

ROWS = [
    {"Name": "50% off", "Title": None, "Rank": 2, "Active": True},
    {"Name": "5_0 deal", "Title": "AE", "Rank": 1, "Active": False},
    {"Name": "o'brien", "Title": "ae", "Rank": 3, "Active": True},
]


def get(record: dict[str, Any], path: str) -> Any:
    return record.get(path)


def names(where: str, order: str = "") -> list[str]:
    query = soql.parse(f"SELECT Name FROM X WHERE {where} {order}")  # noqa: S608
    rows = [r for r in ROWS if soql.matches(query.where, r, get)]
    return [r["Name"] for r in soql.sort(rows, query.order, get)] if order else sorted(r["Name"] for r in rows)


def test_escaped_wildcards_in_like_are_literal() -> None:
    assert names("Name LIKE '50\\% %'") == ["50% off"]
    assert names("Name LIKE '5\\_0%'") == ["5_0 deal"]
    assert names("Name LIKE '5_0%'") == ["5_0 deal"]  # an unescaped _ is any one character
    assert names("Name LIKE '%\\'%'") == ["o'brien"]


def test_and_binds_tighter_than_or_and_not_applies_to_one_term() -> None:
    assert names("Active = false OR Rank = 3 AND Title = 'AE'") == ["5_0 deal", "o'brien"]
    assert names("(Active = false OR Rank = 3) AND Title = null") == []
    assert names("NOT Active = true AND Rank < 3") == ["5_0 deal"]
    assert names("Rank >= 2 AND Rank <> 3") == ["50% off"]


def test_order_by_puts_nulls_first_ascending_and_last_descending() -> None:
    assert names("Rank > 0", "ORDER BY Title") == ["50% off", "5_0 deal", "o'brien"]
    assert names("Rank > 0", "ORDER BY Title DESC, Rank") == ["5_0 deal", "o'brien", "50% off"]
    assert names("Rank > 0", "ORDER BY Title ASC NULLS LAST, Rank DESC") == ["o'brien", "5_0 deal", "50% off"]


def test_the_parts_of_a_statement() -> None:
    query = soql.parse("select Id, Owner.Name from Lead where Owner.Name in ('a', 'b') limit 5 offset 10")
    assert (query.sobject, query.fields, query.limit, query.offset) == ("Lead", ("Id", "Owner.Name"), 5, 10)
    assert query.paths == ("Id", "Owner.Name", "Owner.Name")
    assert soql.parse("SELECT COUNT() FROM User").count is True


@pytest.mark.parametrize(
    "text",
    [
        "SELECT FROM User",
        "SELECT Id FROM User WHERE Name = 'a' AND",
        'SELECT Id FROM User WHERE Name = "a"',
        "SELECT Id FROM User WHERE Name NOT 'a'",
        "SELECT Id FROM User LIMIT -1",
        "SELECT Id FROM Profile.Name",
        "SELECT Id FROM User WHERE Name = 'a\\'",
    ],
)
def test_statements_outside_the_grammar_are_refused(text: str) -> None:
    with pytest.raises(soql.SoqlError):
        soql.parse(text)
