"""`spanwatch verify` and `spanwatch rebuild` on rows another program changed.

The store is shared: other programs can write into tool_spans and
tool_span_paths too. verify must name what differs from the reference's rows,
down to SQLite's storage class, without tripping on values it cannot decode,
and a rebuild of the session must put it right.
"""

from __future__ import annotations

from pathlib import Path

from daemon_harness import spanwatch, verify
from spanwatch.store.rebuild_all import rebuild_store
from stores import insert_events, make_store, path_rows
from test_store_rebuild import task_session


def test_verify_names_foreign_changes_and_rebuild_repairs_them(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    conn = make_store(db)
    # An older tool_spans whose depth column has no type: SQLite keeps a REAL
    # there as REAL, where the reference writes an INTEGER.
    conn.execute(
        "CREATE TABLE tool_spans (span_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, depth)"
    )
    insert_events(conn, task_session("s1"))
    rebuild_store(db)
    want_paths = path_rows(conn)
    assert verify(db) == (0, verify(db)[1])

    conn.execute("UPDATE tool_spans SET depth = 1.0 WHERE span_id = 'read'")
    conn.execute("INSERT INTO tool_span_paths VALUES ('edit', '/stray.py')")
    conn.execute("INSERT INTO tool_span_paths VALUES ('task', CAST(x'ff' AS TEXT))")
    code, report = verify(db)
    assert code == 1
    (session,) = report["differences"]
    found = {(d["span_id"], d["problem"]) for d in session["differences"]}
    assert found == {("read", "columns"), ("edit", "paths"), ("task", "paths")}
    (depth,) = [d for d in session["differences"] if d["span_id"] == "read"]
    assert depth["stored"] == {"depth": 1.0} and depth["expected"] == {"depth": 1}
    (blob,) = [d for d in session["differences"] if d["span_id"] == "task"]
    assert blob["stored"] == {"paths": ["x'ff'"]} and blob["expected"] == {"paths": []}

    text = spanwatch("verify", "--db", str(db))
    assert text.returncode == 1
    assert "read: depth: stored 1.0, expected 1" in text.stdout

    rebuild_store(db)
    assert verify(db)[0] == 0
    assert path_rows(conn) == want_paths
    (kind,) = conn.execute("SELECT typeof(depth) FROM tool_spans WHERE span_id = 'read'").fetchone()
    assert kind == "integer"
    conn.close()


def test_verify_of_a_store_nobody_touched_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    conn = make_store(db)
    insert_events(conn, task_session("s1") + task_session("s2", prefix="b-"))
    rebuild_store(db)
    before = conn.execute("PRAGMA data_version").fetchone()
    code, report = verify(db)
    assert code == 0 and report["sessions"] == 2 and report["differences"] == []
    assert conn.execute("PRAGMA data_version").fetchone() == before
    conn.close()
