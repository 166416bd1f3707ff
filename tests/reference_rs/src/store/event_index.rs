//! `paths_from_event_payload` as DESIGN.md ("Span semantics") specifies it.

use serde_json::Value;

const PATH_KEYS: [&str; 5] = [
    "path",
    "file_path",
    "target_file",
    "file",
    "relative_workspace_path",
];

/// Every non-empty string under a path-like key, anywhere in the value
/// (JSON text inside string values included), sorted and unique.
pub fn paths_from_event_payload(payload: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(payload, &mut found);
    found.sort();
    found.dedup();
    found
}

fn walk(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if PATH_KEYS.contains(&key.as_str()) {
                    if let Some(s) = child.as_str().filter(|s| !s.is_empty()) {
                        found.push(s.to_owned());
                    }
                }
                walk(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
        Value::String(text) => {
            if let Ok(inner) = serde_json::from_str::<Value>(text) {
                walk(&inner, found);
            }
        }
        _ => {}
    }
}
