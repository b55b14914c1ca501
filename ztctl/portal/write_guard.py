"""Find the writes in an SQL statement, for the read-only choke point in ``ztctl.portal.db``.

``find_writes`` reads the statement text that SQLAlchemy is about to send to
the driver and returns every write in it. A write is DML (INSERT, UPDATE,
DELETE, MERGE, REPLACE) with its target table, or any statement whose verb is
not on a short list of known reads, such as DDL, VACUUM or COPY. The check is
conservative: a statement it cannot read counts as a write.

Statements that could lift the database-level read-only setting count as
writes too, because the listener is only the first of two layers. These are
``SET … READ WRITE``, ``SET default_transaction_read_only``, ``RESET``,
``DISCARD`` and ``PRAGMA query_only = OFF``.

Functions that write from inside a SELECT, such as PostgreSQL's ``nextval()``,
are not detected here. The database-level read-only setting stops those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Statements that only read, or only manage the transaction that reads.
_READ_VERBS = frozenset(
    {"SELECT", "WITH", "VALUES", "SHOW", "EXPLAIN", "PRAGMA", "SET", "BEGIN", "START", "COMMIT", "END",
     "ROLLBACK", "SAVEPOINT", "RELEASE", "TABLE"}
)
DML_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})

# SQLite pragmas that take an argument in brackets and still only read.
_READ_PRAGMAS_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}
)
# SQLite pragmas that write although they are given no value.
_WRITING_PRAGMAS = frozenset({"optimize", "incremental_vacuum", "wal_checkpoint"})
# PostgreSQL settings that control the read-only transaction mode.
_READ_ONLY_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only"})

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*.*?(?:\*/|\Z))
    | (?P<literal>[EeXxBbNnUu]?'(?:[^']|'')*(?:'|\Z))
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?(?:\$(?P=tag)?\$|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str
    """``word`` (keyword or bare name), ``name`` (quoted name), ``literal`` or ``other``."""
    text: str
    """Words and literals as written, quoted names without their quotes."""


@dataclass(frozen=True)
class Write:
    """One write found in a statement."""

    verb: str
    """The SQL verb, such as ``INSERT`` or ``CREATE TABLE``."""
    table: str | None
    """The table written to, without its schema, or None when it cannot be read from the statement."""


def tokenize(sql: str) -> list[Token]:
    """Split SQL into tokens, dropping whitespace and comments."""
    tokens: list[Token] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        text = match.group()
        if kind in ("space", "line_comment", "block_comment"):
            continue
        if kind == "word":
            tokens.append(Token("word", text))
        elif kind == "quoted":
            tokens.append(Token("name", text[1:-1]))
        elif kind in ("literal", "dollar"):
            tokens.append(Token("literal", text))
        else:
            tokens.append(Token("other", text))
    return tokens


def find_writes(sql: str) -> list[Write]:
    """Return every write in ``sql``, which may contain several statements separated by ``;``."""
    writes: list[Write] = []
    for statement in _split_statements(tokenize(sql)):
        writes.extend(_statement_writes(statement))
    return writes


def _split_statements(tokens: list[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind == "other" and token.text == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _keyword(tokens: list[Token], index: int) -> str:
    """Return the upper-case keyword at ``index``, or "" for a name, literal, symbol or the end."""
    if 0 <= index < len(tokens) and tokens[index].kind == "word":
        return tokens[index].text.upper()
    return ""


def _statement_writes(tokens: list[Token]) -> list[Write]:
    verb = _keyword(tokens, 0)
    if verb == "EXPLAIN":
        return _statement_writes(_skip_explain_options(tokens))
    if verb == "PRAGMA":
        return _pragma_writes(tokens)
    if verb not in _READ_VERBS and verb not in DML_VERBS:
        return [_other_write(tokens)]
    if _lifts_read_only(tokens):
        return [Write(f"{verb} that lifts read-only mode", None)]
    return _dml_writes(tokens)


def _skip_explain_options(tokens: list[Token]) -> list[Token]:
    index = 1
    if index < len(tokens) and tokens[index].text == "(":
        index = _after_closing_bracket(tokens, index)
    while _keyword(tokens, index) in ("QUERY", "PLAN", "ANALYZE", "ANALYSE", "VERBOSE"):
        index += 1
    return tokens[index:]


def _after_closing_bracket(tokens: list[Token], index: int) -> int:
    depth = 0
    for position in range(index, len(tokens)):
        if tokens[position].kind != "other":
            continue
        if tokens[position].text == "(":
            depth += 1
        elif tokens[position].text == ")":
            depth -= 1
            if depth == 0:
                return position + 1
    return len(tokens)


def _pragma_writes(tokens: list[Token]) -> list[Write]:
    index = 1
    if index + 1 < len(tokens) and tokens[index + 1].text == ".":
        index += 2
    name = tokens[index].text.lower() if index < len(tokens) else ""
    following = tokens[index + 1].text if index + 1 < len(tokens) else ""
    is_write = (
        following == "="
        or (following == "(" and name not in _READ_PRAGMAS_WITH_ARGUMENT)
        or name in _WRITING_PRAGMAS
    )
    return [Write(f"PRAGMA {name}", None)] if is_write else []


def _lifts_read_only(tokens: list[Token]) -> bool:
    for index, token in enumerate(tokens):
        if token.kind == "word" and token.text.lower() == "set_config":
            return True
        if _keyword(tokens, 0) not in ("SET", "BEGIN", "START"):
            continue
        if token.kind in ("word", "name") and token.text.lower() in _READ_ONLY_SETTINGS:
            return True
        if _keyword(tokens, index) == "READ" and _keyword(tokens, index + 1) == "WRITE":
            return True
    return False


def _dml_writes(tokens: list[Token]) -> list[Write]:
    """Find INSERT, UPDATE, DELETE, MERGE and REPLACE anywhere, including in WITH clauses."""
    writes: list[Write] = []
    for index in range(len(tokens)):
        keyword = _keyword(tokens, index)
        previous = _keyword(tokens, index - 1)
        if previous == "THEN":
            # INSERT, UPDATE and DELETE after THEN are the actions of a MERGE,
            # which writes only to the MERGE target found below.
            continue
        if keyword == "INSERT" or (keyword == "REPLACE" and index == 0) or keyword == "MERGE":
            target = _name_after(tokens, index + 1, skip_until="INTO")
        elif keyword == "UPDATE" and previous not in ("DO", "FOR", "ON", "KEY", "NO"):
            # "DO UPDATE" (upsert), "FOR UPDATE" (row lock) and "ON UPDATE" (a
            # foreign key action) are part of another statement, not a write of their own.
            target = _name_after(tokens, index + 1, skip_words=("OR", "ROLLBACK", "ABORT", "REPLACE", "FAIL",
                                                                "IGNORE", "ONLY"))
        elif keyword == "DELETE" and previous != "ON":
            target = _name_after(tokens, index + 1, skip_until="FROM")
        elif keyword == "INTO" and _keyword(tokens, 0) == "SELECT":
            # PostgreSQL's SELECT … INTO creates a table.
            keyword, target = "SELECT INTO", _name_after(tokens, index + 1, skip_words=("TEMP", "TEMPORARY",
                                                                                         "UNLOGGED", "TABLE"))
        else:
            continue
        writes.append(Write(keyword, target))
    return writes


def _name_after(
    tokens: list[Token],
    index: int,
    *,
    skip_until: str | None = None,
    skip_words: tuple[str, ...] = ("ONLY",),
) -> str | None:
    """Return the table name at ``index`` after skipping to past ``skip_until`` and over ``skip_words``."""
    if skip_until is not None:
        while index < len(tokens) and _keyword(tokens, index) != skip_until:
            if tokens[index].kind == "other":
                return None
            index += 1
        index += 1
    while _keyword(tokens, index) in skip_words:
        index += 1
    return _qualified_name_at(tokens, index)


def _qualified_name_at(tokens: list[Token], index: int) -> str | None:
    """Return the last part of ``schema.table`` starting at ``index``."""
    if index >= len(tokens) or tokens[index].kind not in ("word", "name"):
        return None
    name = tokens[index].text
    while index + 2 < len(tokens) and tokens[index + 1].text == "." and tokens[index + 2].kind in ("word", "name"):
        index += 2
        name = tokens[index].text
    return name


def _other_write(tokens: list[Token]) -> Write:
    """Describe a statement that is not a known read: DDL, maintenance, COPY and the like."""
    verb = _keyword(tokens, 0) or (tokens[0].text if tokens else "")
    index = 1
    while _keyword(tokens, index) in ("UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "OR", "REPLACE", "MATERIALIZED",
                                      "VIRTUAL", "CONCURRENTLY"):
        index += 1
    object_type = _keyword(tokens, index)
    if verb in ("TRUNCATE", "COPY", "LOCK"):
        return Write(verb, _name_after(tokens, 1, skip_words=("TABLE", "ONLY")))
    if verb not in ("CREATE", "ALTER", "DROP") or not object_type:
        return Write(verb, None)

    index += 1
    while _keyword(tokens, index) in ("IF", "NOT", "EXISTS", "ONLY", "CONCURRENTLY"):
        index += 1
    name = _qualified_name_at(tokens, index)
    if object_type == "INDEX":
        # An index is named after its table in the message, because the table is what changes.
        for position in range(index, len(tokens)):
            if _keyword(tokens, position) == "ON":
                name = _name_after(tokens, position + 1)
                break
    return Write(f"{verb} {object_type}", name)
