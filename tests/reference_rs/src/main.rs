//! `tool-span-reference DB`: rebuild every session's tool spans of a SQLite
//! event store with the reference module, as the production store would.

// The reference and its support modules carry items this binary never uses.
#![allow(dead_code)]

mod core {
    pub mod event;
}
mod store {
    pub mod event_index;
}
mod tool_span_index;

use anyhow::{Context, Result};
use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tool_spans (
    span_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    tool TEXT,
    tool_call_id TEXT,
    status TEXT NOT NULL,
    started_at_ms INTEGER,
    ended_at_ms INTEGER,
    lead_time_ms INTEGER,
    tokens_in INTEGER,
    tokens_out INTEGER,
    reasoning_tokens INTEGER,
    cost_usd_e6 INTEGER,
    paths_json TEXT NOT NULL,
    parent_span_id TEXT,
    depth INTEGER NOT NULL,
    subtree_cost_usd_e6 INTEGER,
    subtree_token_count INTEGER
);
CREATE TABLE IF NOT EXISTS tool_span_paths (
    span_id TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (span_id, path)
);
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(db), None) = (args.next(), args.next()) else {
        eprintln!("usage: tool-span-reference DB");
        std::process::exit(2);
    };
    let mut conn = Connection::open(&db).with_context(|| format!("open {db}"))?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    // Sessions in order of first appearance, as a store rebuilding everything would.
    // A session id that is not UTF-8 cannot be passed to the reference: skipped.
    let sessions: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT session_id FROM events WHERE typeof(session_id) = 'text'
             GROUP BY session_id ORDER BY MIN(id)",
        )?;
        let rows = stmt.query_map([], |row| Ok(row.get::<_, String>(0).ok()))?;
        let ids = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        ids.into_iter().flatten().collect()
    };
    for session_id in &sessions {
        tool_span_index::rebuild_tool_spans_for_session(&tx, session_id)
            .with_context(|| format!("rebuild session {session_id}"))?;
    }
    tx.commit()?;
    Ok(())
}
