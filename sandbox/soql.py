"""The subset of SOQL the Salesforce emulator answers, parsed strictly.

Grammar (keywords case-insensitive, as in SOQL)::

    query   := SELECT fields FROM name [WHERE cond] [ORDER BY order {, order}] [LIMIT int] [OFFSET int]
    fields  := COUNT() | COUNT(path) | path {, path}
    cond    := conj {OR conj}
    conj    := unary {AND unary}
    unary   := NOT unary | '(' cond ')' | path op value | path [NOT] IN '(' value {, value} ')'
               | path LIKE string
    op      := = | != | <> | < | <= | > | >=
    value   := string | number | TRUE | FALSE | NULL
    order   := path [ASC | DESC] [NULLS FIRST | NULLS LAST]
    path    := name {. name}        (a relationship path such as Profile.Name or Manager.Email)

String literals are single-quoted; a backslash escapes the next character the way SOQL does
(``\\'``, ``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\f``; ``\\%`` and ``\\_`` are a
literal ``%`` and ``_`` in a LIKE pattern). An escaped quote is data, never the end of the literal,
so a value escaped by a client can never become query text. Anything else (an unknown escape, an
unterminated literal, a token out of place) is a :class:`SoqlError`, as Salesforce's
``MALFORMED_QUERY``.

What this module may be trusted for: the syntax above and its evaluation over plain records
through a resolver the caller supplies (which knows fields and relationships). String comparisons
are case-insensitive, as SOQL's are for text fields. Not modelled: semi-joins, date literals,
GROUP BY, aggregate functions other than COUNT, FOR UPDATE, polymorphic TYPEOF.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "TRUE",
        "FALSE",
        "NULL",
        "COUNT",
    }
)
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
MAX_QUERY_LENGTH = 100_000  # Salesforce refuses longer SOQL statements


class SoqlError(ValueError):
    """A statement outside the grammar (Salesforce's MALFORMED_QUERY)."""


@dataclass(frozen=True)
class Token:
    kind: str  # "name", "keyword", "string", "number", "op", "punct", "end"
    text: str
    value: Any = None
    like: str | None = None  # for strings: the LIKE pattern as a regex (escaped wildcards are literal)


@dataclass(frozen=True)
class Compare:
    path: str
    op: str  # = != < <= > >= in notin like
    value: Any  # a scalar, a tuple for IN, a compiled regex for LIKE


@dataclass(frozen=True)
class Logical:
    op: str  # "and", "or"
    terms: tuple[Condition, ...]


@dataclass(frozen=True)
class Negation:
    term: Condition


Condition = Compare | Logical | Negation


@dataclass(frozen=True)
class Order:
    path: str
    descending: bool = False
    nulls_last: bool = False


@dataclass(frozen=True)
class Query:
    sobject: str
    fields: tuple[str, ...]  # empty for COUNT()
    count: bool = False
    where: Condition | None = None
    order: tuple[Order, ...] = ()
    limit: int | None = None
    offset: int = 0
    paths: tuple[str, ...] = field(default=())  # every path the statement names (select, where, order)


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_QUERY_LENGTH:
        raise SoqlError(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "'":
            token, i = _string(text, i)
            tokens.append(token)
        elif ch in "(),":
            tokens.append(Token("punct", ch))
            i += 1
        elif op := next((o for o in _OPERATORS if text.startswith(o, i)), None):
            tokens.append(Token("op", op))
            i += len(op)
        elif m := _NUMBER.match(text, i):
            raw = m.group()
            tokens.append(Token("number", raw, float(raw) if "." in raw else int(raw)))
            i = m.end()
        elif m := _NAME.match(text, i):
            word = m.group()
            upper = word.upper()
            tokens.append(Token("keyword", upper) if upper in _KEYWORDS else Token("name", word))
            i = m.end()
        else:
            raise SoqlError(f"unexpected character {ch!r} at position {i}")
    tokens.append(Token("end", ""))
    return tokens


def _string(text: str, start: int) -> tuple[Token, int]:
    """The literal opening at ``start``: its value, its LIKE regex and where it ends."""
    value: list[str] = []
    pattern: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "'":
            return Token("string", text[start : i + 1], "".join(value), "".join(pattern)), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                value.append(_ESCAPES[nxt])
                pattern.append(re.escape(_ESCAPES[nxt]))
            elif nxt in "%_":
                value.append("\\" + nxt)  # outside LIKE the backslash stays, as SOQL keeps it
                pattern.append(re.escape(nxt))
            else:
                raise SoqlError(f"invalid escape sequence \\{nxt} at position {i}")
            i += 2
            continue
        value.append(ch)
        pattern.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    raise SoqlError(f"unterminated string literal starting at position {start}")


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.pos = 0
        self.paths: list[str] = []

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        token = self.peek()
        if token.kind == kind and (text is None or token.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str | None = None) -> Token:
        token = self.accept(kind, text)
        if token is None:
            got = self.peek()
            wanted = text or kind
            raise SoqlError(f"expected {wanted} but found {got.text or 'the end of the query'!r}")
        return token

    def path(self) -> str:
        name = self.expect("name").text
        self.paths.append(name)
        return name

    def query(self) -> Query:
        self.expect("keyword", "SELECT")
        fields: list[str] = []
        count = False
        if self.accept("keyword", "COUNT"):
            self.expect("punct", "(")
            if not self.accept("punct", ")"):
                self.path()
                self.expect("punct", ")")
            count = True
        else:
            fields.append(self.path())
            while self.accept("punct", ","):
                fields.append(self.path())
        self.expect("keyword", "FROM")
        sobject = self.expect("name").text
        if "." in sobject:
            raise SoqlError(f"{sobject!r} is not an sObject name")
        where = self.condition() if self.accept("keyword", "WHERE") else None
        order: list[Order] = []
        if self.accept("keyword", "ORDER"):
            self.expect("keyword", "BY")
            order.append(self.order())
            while self.accept("punct", ","):
                order.append(self.order())
        limit = self.integer() if self.accept("keyword", "LIMIT") else None
        offset = self.integer() if self.accept("keyword", "OFFSET") else 0
        self.expect("end")
        return Query(sobject, tuple(fields), count, where, tuple(order), limit, offset, tuple(self.paths))

    def integer(self) -> int:
        token = self.expect("number")
        if not isinstance(token.value, int) or token.value < 0:
            raise SoqlError(f"expected a non-negative integer, found {token.text!r}")
        return token.value

    def order(self) -> Order:
        path = self.path()
        descending = bool(self.accept("keyword", "DESC"))
        if not descending:
            self.accept("keyword", "ASC")
        nulls_last = descending  # SOQL's default: NULLS FIRST ascending, NULLS LAST descending
        if self.accept("keyword", "NULLS"):
            nulls_last = bool(self.accept("keyword", "LAST"))
            if not nulls_last:
                self.expect("keyword", "FIRST")
        return Order(path, descending, nulls_last)

    def condition(self) -> Condition:
        terms = [self.conjunction()]
        while self.accept("keyword", "OR"):
            terms.append(self.conjunction())
        return terms[0] if len(terms) == 1 else Logical("or", tuple(terms))

    def conjunction(self) -> Condition:
        terms = [self.unary()]
        while self.accept("keyword", "AND"):
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else Logical("and", tuple(terms))

    def unary(self) -> Condition:
        if self.accept("keyword", "NOT"):
            return Negation(self.unary())
        if self.accept("punct", "("):
            inner = self.condition()
            self.expect("punct", ")")
            return inner
        path = self.path()
        if op := self.accept("op"):
            return Compare(path, "!=" if op.text == "<>" else op.text, self.value())
        negated = bool(self.accept("keyword", "NOT"))
        if self.accept("keyword", "IN"):
            self.expect("punct", "(")
            values = [self.value()]
            while self.accept("punct", ","):
                values.append(self.value())
            self.expect("punct", ")")
            return Compare(path, "notin" if negated else "in", tuple(values))
        if negated:
            raise SoqlError("expected IN after NOT")
        if self.accept("keyword", "LIKE"):
            token = self.expect("string")
            return Compare(path, "like", re.compile(f"^{token.like}$", re.IGNORECASE | re.DOTALL))
        raise SoqlError(f"expected an operator after {path!r}, found {self.peek().text or 'the end'!r}")

    def value(self) -> Any:
        token = self.take()
        if token.kind in {"string", "number"}:
            return token.value
        if token.kind == "keyword" and token.text in {"TRUE", "FALSE"}:
            return token.text == "TRUE"
        if token.kind == "keyword" and token.text == "NULL":
            return None
        raise SoqlError(f"expected a value, found {token.text or 'the end of the query'!r}")


def parse(text: str) -> Query:
    """The statement as a :class:`Query`, or :class:`SoqlError`."""
    return _Parser(tokenize(text)).query()


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

Resolver = Callable[[dict[str, Any], str], Any]


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _equal(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return bool(_fold(left) == _fold(right))


def _order(left: Any, right: Any, op: str) -> bool:
    if left is None or right is None or isinstance(left, bool) != isinstance(right, bool):
        return False
    a, b = _fold(left), _fold(right)
    if isinstance(a, str) != isinstance(b, str):
        return False
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def matches(condition: Condition | None, record: dict[str, Any], resolve: Resolver) -> bool:
    """Whether ``record`` satisfies ``condition`` (``None`` matches every record)."""
    if condition is None:
        return True
    if isinstance(condition, Negation):
        return not matches(condition.term, record, resolve)
    if isinstance(condition, Logical):
        results = (matches(term, record, resolve) for term in condition.terms)
        return all(results) if condition.op == "and" else any(results)
    left = resolve(record, condition.path)
    op, right = condition.op, condition.value
    if op == "=":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op == "in":
        return any(_equal(left, v) for v in right)
    if op == "notin":
        return not any(_equal(left, v) for v in right)
    if op == "like":
        return isinstance(left, str) and right.match(left) is not None
    return _order(left, right, op)


def sort(records: Sequence[dict[str, Any]], order: Sequence[Order], resolve: Resolver) -> list[dict[str, Any]]:
    """``records`` in ``order`` (stable; the last key is applied first)."""
    result = list(records)
    for key in reversed(order):
        present = [r for r in result if resolve(r, key.path) is not None]
        missing = [r for r in result if resolve(r, key.path) is None]
        present.sort(key=lambda r: _sort_key(resolve(r, key.path)), reverse=key.descending)
        result = present + missing if key.nulls_last else missing + present
    return result


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value).casefold())
