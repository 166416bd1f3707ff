//! The store's `paths_from_event_payload`, verbatim from upstream (DESIGN.md
//! "Span semantics" describes it in words).

use serde_json::Value;

pub fn paths_from_event_payload(payload: &Value) -> Vec<String> {
    let mut out = Vec::new(); collect_paths(payload, &mut out); out.sort(); out.dedup(); out }
fn collect_paths(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => { for (k, val) in map {
            if matches!(k.as_str(), "path" | "file_path" | "target_file" | "file" | "relative_workspace_path")
               && val.as_str().is_some_and(|s| !s.is_empty()) { out.push(val.as_str().unwrap().to_string()); }
            collect_paths(val, out); } }
        Value::Array(arr) => { for x in arr { collect_paths(x, out); } }
        Value::String(s) => { if let Ok(sub) = serde_json::from_str::<Value>(s) { collect_paths(&sub, out); } }
        _ => {} } }
