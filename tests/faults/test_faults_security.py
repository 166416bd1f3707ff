"""What spanwatch may touch: its own tables, private files, no network; SQL from fixed parts."""

from __future__ import annotations

import ast
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import fault_scenarios as scenarios
import pytest
from faultkit import dump_of_others, populate

SRC = Path(__file__).resolve().parents[2] / "src" / "spanwatch"
SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|ATTACH|FROM|INTO|WHERE|"
    r"VALUES|TABLE|TRIGGER|INDEX)\b"
)

#: Every value interpolated into SQL text in src/, with why it is a fixed identifier
#: or a run of placeholders. Keyed by (file under src/spanwatch, expression).
ALLOWED = {
    ("cli/tree.py", "', '.join(_SPAN_COLUMNS)"): "SpanView's field names",
    ("simulate/bulk.py", "marks"): "a run of ? placeholders",
    ("simulate/schema.py", "', '.join(columns)"): "events columns from ALL_COLUMNS",
    ("simulate/schema.py", "marks"): "a run of ? placeholders",
    ("simulate/schema.py", "int(busy_timeout_ms)"): "an int",
    ("simulate/schema.py", "name"): "ADDED_COLUMNS names",
    ("simulate/schema.py", "decl"): "ADDED_COLUMNS declarations",
    ("store/connection.py", "int(busy_timeout_ms)"): "an int",
    ("store/checkpoints.py", "int(previous)"): "an int",
    ("store/worker.py", "MMAP_BYTES"): "an int constant",
    ("store/events.py", "shape.select_list"): "REQUIRED/OPTIONAL_EVENT_COLUMNS or literals",
    ("store/events.py", "_select_list(shape)"): "shape.select_list with the literal _PAYLOAD",
    ("store/events.py", "columns"): "_select_list(shape)",
    ("store/events.py", "marks"): "a run of ? placeholders",
    ("store/marks.py", "match"): "'?' or 'CAST(? AS TEXT)'",
    ("store/schema.py", "name"): "TOOL_SPAN_COLUMNS names and INDEXES names",
    ("store/schema.py", "on"): "INDEXES tables and columns",
    ("store/schema.py", "decl"): "TOOL_SPAN_COLUMNS declarations",
    ("store/schema.py", "table"): "table names given as literals (checked below)",
    (
        "store/schema.py",
        "', '.join((f'{name} {decl}' for name, decl in TOOL_SPAN_COLUMNS))",
    ): "TOOL_SPAN_COLUMNS",
    ("store/spans.py", "_COLUMNS"): "SPAN_COLUMN_NAMES",
    ("store/spans.py", "', '.join('?' * len(SPAN_COLUMN_NAMES))"): "placeholders",
    ("store/spans.py", "marks"): "a run of ? placeholders",
    (
        "store/spans.py",
        "', '.join((f'{name} = excluded.{name}' for name in SPAN_COLUMN_NAMES[1:]))",
    ): "SPAN_COLUMN_NAMES",
    ("store/spans.py", "', '.join((f'{SPAN_COLUMN_NAMES[i]} = ?' for i in _IN_PLACE))"): (
        "SPAN_COLUMN_NAMES"
    ),
    ("store/triggers.py", "_FLAG.format(row='NEW')"): "NEW or OLD",
    ("store/triggers.py", "_FLAG.format(row='OLD')"): "NEW or OLD",
    ("store/triggers.py", "name"): "TRIGGER_NAMES",
    ("store/triggers.py", "marks"): "a run of ? placeholders",
}
#: Functions that put their `table` argument into SQL: callers must pass literals.
TABLE_ARGUMENT = {"table_columns": 1, "has_table": 1}


def sql_interpolations() -> Iterator[tuple[str, int, str]]:
    """(file, line, expression) of every non-constant part of SQL-looking text in src/."""
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.JoinedStr) and SQL_WORDS.search(_constant_text(node)):
                for value in node.values:
                    if isinstance(value, ast.FormattedValue):
                        yield name, node.lineno, ast.unparse(value.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and SQL_WORDS.search(_constant_text(node.func.value))
            ):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if not isinstance(arg, ast.Constant):
                        yield name, node.lineno, ast.unparse(arg)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
                parts = _operands(node)
                if any(SQL_WORDS.search(_constant_text(part)) for part in parts):
                    for part in parts:
                        if not isinstance(part, ast.Constant | ast.JoinedStr):
                            yield name, node.lineno, ast.unparse(part)


def _operands(node: ast.expr) -> list[ast.expr]:
    """The operands of a chain of + (or one %), flattened."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return [*_operands(node.left), *_operands(node.right)]
    return [node]


def _constant_text(node: ast.expr) -> str:
    """The literal text of a string constant or f-string (interpolations left out)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_constant_text(value) for value in node.values)
    return ""


def test_sql_is_built_only_from_fixed_identifiers_and_placeholders() -> None:
    found = list(sql_interpolations())
    assert found, "the scan found nothing: is SRC right?"
    unknown = [item for item in found if item[::2] not in ALLOWED]
    assert unknown == [], "SQL built from values not known to be fixed: parameterise them"


def test_table_names_put_into_sql_are_literals() -> None:
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in TABLE_ARGUMENT:
                argument = node.args[TABLE_ARGUMENT[node.func.id]]  # type: ignore[attr-defined]
                calls.append((path.name, node.lineno, ast.unparse(argument)))
    assert calls
    assert [c for c in calls if not re.fullmatch(r"'\w+'", c[2])] == []


@pytest.mark.slow
def test_only_spanwatch_tables_change_files_are_private_and_no_network(tmp_path: Path) -> None:
    trial = scenarios.security(tmp_path)
    assert trial.problems == [], trial.details
    assert trial.recovered
    assert trial.details["files_made"]  # the -wal and -shm of a 0600 store were checked


def test_the_dump_check_sees_a_change_to_another_table(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    populate(db, 300, sessions=2, seed=5)
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in scenarios.AGENT_OBJECTS:
        conn.execute(statement)
    conn.execute("CREATE TABLE tool_spans (span_id TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE spanwatch_x (a)")
    before = dump_of_others(db)
    text = "\n".join(before)
    assert "agent_sessions" in text and "agent_count" in text and "INSERT INTO events" in text
    assert "tool_spans" not in text and "spanwatch_x" not in text
    conn.execute("INSERT INTO tool_spans VALUES ('mine')")
    assert dump_of_others(db) == before
    conn.execute("UPDATE settings SET value = 'light' WHERE key = 'theme'")
    assert dump_of_others(db) != before
    conn.close()
