"""The subset of Lucene query syntax that Auth0 user search (``search_engine=v3``) accepts.

A tokenizer and a recursive-descent parser turn ``q`` into a small tree that is evaluated against
user documents (plain dicts). Supported:

* ``field:value``, ``field:"quoted phrase"``, ``field:(a OR b)`` (the field applies inside);
* dotted fields (``app_metadata.entra_oid``, ``identities.connection``); lists on the path are
  searched element by element, as Auth0 does for arrays of objects;
* ``AND`` / ``&&``, ``OR`` / ``||``, ``NOT`` / ``!`` / a leading ``-``, a leading ``+`` (accepted,
  no effect), parentheses;
* juxtaposed clauses without an operator are joined with ``OR``, as Lucene's default operator is,
  except that a juxtaposed negated clause excludes (``a -b`` is ``a AND NOT b``, like Lucene's
  MUST_NOT; a query of negated clauses only matches everything else);
* precedence: ``NOT`` binds tighter than ``AND``, which binds tighter than ``OR``. This is plain
  boolean algebra, not Lucene's per-clause MUST/SHOULD flags: ``a AND b OR c`` here means
  ``(a AND b) OR c`` where Lucene would require ``a`` and ``b``. Use parentheses when mixing;
* wildcards ``*`` (any run) and ``?`` (one character) inside unquoted terms; ``field:*`` and
  ``_exists_:field`` test that a field holds a value; ``*`` and ``*:*`` match everything;
* ranges ``[a TO b]`` (inclusive), ``{a TO b}`` (exclusive), either end ``*``;
* backslash escapes every reserved character ``+ - && || ! ( ) { } [ ] ^ " ~ * ? : \\ /`` (and
  white space) so that it is matched literally;
* a term without a field searches the normalized profile fields (never metadata), as Auth0 does;
* a boost suffix ``^2`` is accepted and ignored.

Matching rules (Auth0's, simplified): values of the normalized fields ``email``, ``name``,
``given_name``, ``family_name``, ``nickname`` compare case-insensitively, every other field
case-sensitively. A quoted phrase matches a value that equals it or holds its words in order; an
unquoted term matches a value that equals it or one of the value's white-space separated words.
Booleans and numbers compare by their JSON text (``blocked:true``, ``logins_count:3``).

Not supported, and rejected with :class:`QuerySyntaxError`: regular expressions (an unescaped
``/``), fuzzy and proximity (``~``), a dangling operator or colon, unbalanced brackets or quotes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Characters that must be escaped with a backslash to be matched literally.
RESERVED = frozenset('+-&|!(){}[]^"~*?:\\/')

#: Fields whose values Auth0 compares without regard to case.
CASE_INSENSITIVE_FIELDS = frozenset({"email", "name", "given_name", "family_name", "nickname"})

#: Fields a term without a field name searches (metadata is never searched this way).
DEFAULT_FIELDS = (
    "email",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "username",
    "user_id",
    "phone_number",
)


class QuerySyntaxError(ValueError):
    """``q`` is not valid in the supported syntax; ``position`` is a 0-based offset into it."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


def escape(value: str) -> str:
    """Escape ``value`` so that it is one literal unquoted term (reserved characters and white
    space are preceded by a backslash)."""
    out: list[str] = []
    for ch in value:
        if ch in RESERVED or ch.isspace():
            out.append("\\")
        out.append(ch)
    return "".join(out)


def quote(value: str) -> str:
    """``value`` as a quoted phrase (``"`` and ``\\`` escaped), for an exact match."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

# Token kinds
TERM = "TERM"  # a word; ``text`` is unescaped, ``wild`` marks positions of unescaped * and ?
PHRASE = "PHRASE"
AND = "AND"
OR = "OR"
NOT = "NOT"
PLUS = "PLUS"
LPAREN = "("
RPAREN = ")"
COLON = ":"
RANGE_OPEN = "RANGE_OPEN"  # [ or {
RANGE_CLOSE = "RANGE_CLOSE"  # ] or }
BOOST = "BOOST"
EOF = "EOF"

STAR = "\x00*"  # wildcard markers inside a pattern (a tuple of literal strings and markers)
ONE = "\x00?"

# A term ends at white space or at one of these unescaped characters.
_TERM_STOP = frozenset('():"[]{}^~/')


@dataclass(frozen=True)
class Token:
    kind: str
    pos: int
    text: str = ""  # unescaped text (TERM, PHRASE), or the bracket character (RANGE_*)
    pattern: tuple[str, ...] = ()  # TERM only: literal chunks and STAR / ONE markers

    @property
    def has_wildcard(self) -> bool:
        return any(p in (STAR, ONE) for p in self.pattern)


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        start = i
        if ch == "(":
            tokens.append(Token(LPAREN, start))
            i += 1
        elif ch == ")":
            tokens.append(Token(RPAREN, start))
            i += 1
        elif ch == ":":
            tokens.append(Token(COLON, start))
            i += 1
        elif ch in "[{":
            tokens.append(Token(RANGE_OPEN, start, ch))
            i += 1
        elif ch in "]}":
            tokens.append(Token(RANGE_CLOSE, start, ch))
            i += 1
        elif ch == '"':
            i, text = _read_phrase(query, i)
            tokens.append(Token(PHRASE, start, text))
        elif ch == "^":
            i += 1
            j = i
            while j < n and (query[j].isdigit() or query[j] == "."):
                j += 1
            if j == i:
                raise QuerySyntaxError("a boost '^' must be followed by a number", start)
            tokens.append(Token(BOOST, start, query[i:j]))
            i = j
        elif ch == "~":
            raise QuerySyntaxError("fuzzy and proximity searches ('~') are not supported", start)
        elif ch == "/":
            raise QuerySyntaxError("regular expressions are not supported; escape '/' as '\\/'", start)
        elif query.startswith("&&", i):
            tokens.append(Token(AND, start))
            i += 2
        elif query.startswith("||", i):
            tokens.append(Token(OR, start))
            i += 2
        elif ch in "!-":
            tokens.append(Token(NOT, start))
            i += 1
        elif ch == "+":
            tokens.append(Token(PLUS, start))
            i += 1
        else:
            i, text, pattern = _read_term(query, i)
            raw = query[start:i]
            if raw == "AND":
                tokens.append(Token(AND, start))
            elif raw == "OR":
                tokens.append(Token(OR, start))
            elif raw == "NOT":
                tokens.append(Token(NOT, start))
            else:
                tokens.append(Token(TERM, start, text, pattern))
    tokens.append(Token(EOF, n))
    return tokens


def _read_phrase(query: str, i: int) -> tuple[int, str]:
    start = i
    i += 1
    out: list[str] = []
    while i < len(query):
        ch = query[i]
        if ch == "\\":
            if i + 1 >= len(query):
                raise QuerySyntaxError("a backslash must escape a character", i)
            out.append(query[i + 1])
            i += 2
        elif ch == '"':
            return i + 1, "".join(out)
        else:
            out.append(ch)
            i += 1
    raise QuerySyntaxError("unterminated quoted phrase", start)


def _read_term(query: str, i: int) -> tuple[int, str, tuple[str, ...]]:
    """Read one term; ``+ - ! && ||`` are operators only at a term's start (as in Lucene)."""
    chunks: list[str] = []
    literal: list[str] = []
    text: list[str] = []
    n = len(query)
    while i < n:
        ch = query[i]
        if ch.isspace() or ch in _TERM_STOP:
            break
        if ch == "\\":
            if i + 1 >= n:
                raise QuerySyntaxError("a backslash must escape a character", i)
            literal.append(query[i + 1])
            text.append(query[i + 1])
            i += 2
            continue
        if ch in "*?":
            if literal:
                chunks.append("".join(literal))
                literal = []
            chunks.append(STAR if ch == "*" else ONE)
            text.append(ch)
            i += 1
            continue
        literal.append(ch)
        text.append(ch)
        i += 1
    if literal:
        chunks.append("".join(literal))
    return i, "".join(text), tuple(chunks)


# --------------------------------------------------------------------------------------------
# Query tree
# --------------------------------------------------------------------------------------------


class Node:
    def matches(self, doc: dict[str, Any]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class MatchAll(Node):
    def matches(self, doc: dict[str, Any]) -> bool:
        return True


@dataclass(frozen=True)
class And(Node):
    parts: tuple[Node, ...]

    def matches(self, doc: dict[str, Any]) -> bool:
        return all(p.matches(doc) for p in self.parts)


@dataclass(frozen=True)
class Or(Node):
    parts: tuple[Node, ...]

    def matches(self, doc: dict[str, Any]) -> bool:
        return any(p.matches(doc) for p in self.parts)


@dataclass(frozen=True)
class Not(Node):
    part: Node

    def matches(self, doc: dict[str, Any]) -> bool:
        return not self.part.matches(doc)


@dataclass(frozen=True)
class Exists(Node):
    field: str

    def matches(self, doc: dict[str, Any]) -> bool:
        return any(True for _ in field_values(doc, self.field))


@dataclass(frozen=True)
class Term(Node):
    """``field`` None: the default fields. ``phrase``: an exact (quoted) match."""

    field: str | None
    pattern: tuple[str, ...]
    phrase: bool = False

    def matches(self, doc: dict[str, Any]) -> bool:
        fields = DEFAULT_FIELDS if self.field is None else (self.field,)
        for name in fields:
            fold = name in CASE_INSENSITIVE_FIELDS
            pattern = tuple(p if p in (STAR, ONE) else (p.lower() if fold else p) for p in self.pattern)
            for value in field_values(doc, name):
                text = value.lower() if fold else value
                if self.phrase:
                    if _phrase_matches(pattern[0] if pattern else "", text):
                        return True
                elif _glob(pattern, text) or any(_glob(pattern, word) for word in text.split()):
                    return True
        return False


@dataclass(frozen=True)
class Range(Node):
    field: str
    low: str | None  # None: open
    high: str | None
    low_inclusive: bool
    high_inclusive: bool

    def matches(self, doc: dict[str, Any]) -> bool:
        fold = self.field in CASE_INSENSITIVE_FIELDS
        return any(self._within(v.lower() if fold else v, fold) for v in field_values(doc, self.field))

    def _within(self, value: str, fold: bool) -> bool:
        for bound, inclusive, sign in ((self.low, self.low_inclusive, 1), (self.high, self.high_inclusive, -1)):
            if bound is None:
                continue
            cmp = _compare(value, bound.lower() if fold else bound)
            if cmp is None:
                return False
            if sign * cmp < 0 or (cmp == 0 and not inclusive):
                return False
        return True


def _compare(value: str, bound: str) -> int | None:
    """-1, 0, 1 comparing numbers numerically when both are numbers, otherwise as text."""
    try:
        a: float | str = float(value)
        b: float | str = float(bound)
    except ValueError:
        a, b = value, bound
    if isinstance(a, float) != isinstance(b, float):
        return None
    return (a > b) - (a < b)  # type: ignore[operator]


def _phrase_matches(phrase: str, value: str) -> bool:
    if value == phrase:
        return True
    words = phrase.split()
    if not words:
        return False
    have = value.split()
    return any(have[i : i + len(words)] == words for i in range(len(have) - len(words) + 1))


def _glob(pattern: tuple[str, ...], text: str) -> bool:
    """Match literal chunks and STAR / ONE markers against the whole of ``text``."""
    if not any(p in (STAR, ONE) for p in pattern):
        return "".join(pattern) == text
    # Expand to single units: each literal character, STAR or ONE; then a two-row DP.
    units: list[str] = []
    for p in pattern:
        if p in (STAR, ONE):
            units.append(p)
        else:
            units.extend(p)
    previous = [False] * (len(text) + 1)
    previous[0] = True
    for unit in units:
        current = [False] * (len(text) + 1)
        if unit == STAR:
            current[0] = previous[0]
            for j in range(1, len(text) + 1):
                current[j] = current[j - 1] or previous[j]
        else:
            for j in range(1, len(text) + 1):
                current[j] = previous[j - 1] and (unit == ONE or unit == text[j - 1])
        previous = current
    return previous[len(text)]


def field_values(doc: Any, path: str) -> Iterator[str]:
    """The scalar values at a dotted path, as text; lists on the way are searched element-wise.

    Missing fields, ``None``, empty strings, empty lists and objects yield nothing (Auth0 does not
    index them)."""
    yield from _walk(doc, path.split("."))


def _walk(node: Any, parts: list[str]) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts)
        return
    if not parts:
        if isinstance(node, bool):
            yield "true" if node else "false"
        elif isinstance(node, int | float):
            yield str(node)
        elif isinstance(node, str) and node:
            yield node
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _walk(node[parts[0]], parts[1:])


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, query: str):
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise QuerySyntaxError(f"expected {what}", self.tok.pos)
        return self.take()

    def parse(self) -> Node:
        if self.tok.kind == EOF:
            return MatchAll()
        node = self.or_expr(None)
        if self.tok.kind != EOF:
            raise QuerySyntaxError(f"unexpected {self._describe(self.tok)}", self.tok.pos)
        return node

    # or_expr := and_expr ( [OR] and_expr )*
    # Juxtaposed clauses are OR-ed (Lucene's default operator); a juxtaposed negated clause
    # (``a -b``, ``a NOT b``) excludes, as Lucene's MUST_NOT does, rather than OR-ing ``NOT b``.
    def or_expr(self, field: str | None) -> Node:
        should: list[Node] = []
        exclude: list[Node] = []
        explicit = False
        while True:
            part = self.and_expr(field)
            if isinstance(part, Not) and not explicit:
                exclude.append(part.part)
            else:
                should.append(part)
            if self.tok.kind == OR:
                self.take()
                explicit = True
            elif self.tok.kind in (TERM, PHRASE, LPAREN, NOT, PLUS, RANGE_OPEN):
                explicit = False
            else:
                break
        node: Node = MatchAll()
        if should:
            node = should[0] if len(should) == 1 else Or(tuple(should))
        if not exclude:
            return node
        excluded = Not(exclude[0] if len(exclude) == 1 else Or(tuple(exclude)))
        return excluded if isinstance(node, MatchAll) else And((node, excluded))

    # and_expr := unary ( AND unary )*
    def and_expr(self, field: str | None) -> Node:
        parts = [self.unary(field)]
        while self.tok.kind == AND:
            self.take()
            parts.append(self.unary(field))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    # unary := (NOT | PLUS) unary | clause [BOOST]
    def unary(self, field: str | None) -> Node:
        if self.tok.kind == NOT:
            self.take()
            return Not(self.unary(field))
        if self.tok.kind == PLUS:
            self.take()
            return self.unary(field)
        node = self.clause(field)
        if self.tok.kind == BOOST:
            self.take()
        return node

    # clause := '(' or_expr ')' | TERM ':' value | value
    def clause(self, field: str | None) -> Node:
        tok = self.tok
        if tok.kind == LPAREN:
            self.take()
            node = self.or_expr(field)
            self.expect(RPAREN, "')'")
            return node
        if tok.kind == TERM and self.tokens[self.i + 1].kind == COLON:
            if field is not None:
                raise QuerySyntaxError("a field cannot be given inside a field group", tok.pos)
            self.take()
            self.take()
            if tok.has_wildcard and tok.text != "*":
                raise QuerySyntaxError("a field name cannot hold a wildcard", tok.pos)
            name = tok.text
            if name == "_exists_":
                target = self.expect(TERM, "a field name after '_exists_:'")
                return Exists(target.text)
            if self.tok.kind == LPAREN:
                self.take()
                node = self.or_expr(name)
                self.expect(RPAREN, "')'")
                return node
            if name == "*":
                value = self.expect(TERM, "'*' after '*:'")
                if value.text != "*":
                    raise QuerySyntaxError("only '*:*' may use '*' as a field", tok.pos)
                return MatchAll()
            return self.value(name)
        if tok.kind == COLON:
            raise QuerySyntaxError("':' must follow a field name", tok.pos)
        return self.value(field)

    def value(self, field: str | None) -> Node:
        tok = self.tok
        if tok.kind == PHRASE:
            self.take()
            return Term(field, (tok.text,), phrase=True)
        if tok.kind == TERM:
            self.take()
            if self.tok.kind == COLON:
                raise QuerySyntaxError("unexpected ':' (escape it as '\\:')", self.tok.pos)
            if tok.pattern == (STAR,):
                return MatchAll() if field is None else Exists(field)
            return Term(field, tok.pattern)
        if tok.kind == RANGE_OPEN:
            if field is None:
                raise QuerySyntaxError("a range needs a field", tok.pos)
            return self.range(field)
        raise QuerySyntaxError(f"expected a term, found {self._describe(tok)}", tok.pos)

    def range(self, field: str) -> Node:
        opening = self.take()
        low = self._bound()
        to = self.expect(TERM, "'TO' in a range")
        if to.text != "TO":
            raise QuerySyntaxError("expected 'TO' in a range", to.pos)
        high = self._bound()
        closing = self.expect(RANGE_CLOSE, "']' or '}' closing the range")
        return Range(field, low, high, opening.text == "[", closing.text == "]")

    def _bound(self) -> str | None:
        tok = self.tok
        if tok.kind == PHRASE:
            self.take()
            return tok.text
        if tok.kind == TERM and tok.text != "TO":
            self.take()
            return None if tok.pattern == (STAR,) else tok.text
        raise QuerySyntaxError("expected a range bound", tok.pos)

    def _describe(self, tok: Token) -> str:
        if tok.kind == EOF:
            return "end of query"
        if tok.kind in (TERM, PHRASE):
            return f"term {tok.text!r}"
        names = {
            AND: "AND",
            OR: "OR",
            NOT: "NOT",
            PLUS: "'+'",
            BOOST: "'^'",
            RANGE_OPEN: "range",
            RANGE_CLOSE: "range end",
        }
        return names.get(tok.kind, repr(tok.kind))


def parse(query: str) -> Node:
    """Parse ``query`` into a tree whose ``matches(doc)`` tells whether a user matches."""
    return _Parser(query).parse()
