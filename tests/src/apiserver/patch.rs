//! The patch formats the API server takes: JSON merge patch (RFC 7386),
//! strategic merge patch (as a merge patch: maps merge, lists are
//! replaced, which is what it does for lists without a merge key), and
//! JSON patch (RFC 6902).

use serde_json::Value;

/// RFC 7386: objects merge, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// The parent of a JSON pointer's target and the last segment.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let (head, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    let p = if head.is_empty() {
        doc
    } else {
        doc.pointer_mut(head)
            .ok_or_else(|| format!("no such path {head:?}"))?
    };
    Ok((p, unescape(last)))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("bad array index {last:?}"))?
            };
            a.insert(i, value);
        }
        _ => return Err(format!("{path:?}: parent is not a container")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("no such path {path:?}")),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(|| format!("bad array index {last:?}"))?;
            Ok(a.remove(i))
        }
        _ => Err(format!("no such path {path:?}")),
    }
}

/// RFC 6902, applied to a copy: all operations or none.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is a list of operations")?;
    let mut out = doc.clone();
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without a path")?;
        match op["op"].as_str().unwrap_or("") {
            "add" => add(&mut out, path, op["value"].clone())?,
            "remove" => {
                remove(&mut out, path)?;
            }
            "replace" => {
                remove(&mut out, path)?;
                add(&mut out, path, op["value"].clone())?;
            }
            "test" => {
                if out.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test of {path:?} failed"));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("operation without from")?;
                let v = if op["op"] == "move" {
                    remove(&mut out, from)?
                } else {
                    out.pointer(from)
                        .cloned()
                        .ok_or_else(|| format!("no such path {from:?}"))?
                };
                add(&mut out, path, v)?;
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patches() {
        let mut v = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(&mut v, &json!({"a": {"b": null, "e": 2}, "d": [3]}));
        assert_eq!(v, json!({"a": {"c": [1, 2], "e": 2}, "d": [3]}));
        let p = json!([
            {"op": "add", "path": "/a/c/-", "value": 3},
            {"op": "replace", "path": "/d", "value": "x"},
            {"op": "add", "path": "/a/k~1v", "value": true},
            {"op": "test", "path": "/a/e", "value": 2},
            {"op": "move", "from": "/a/e", "path": "/f"},
        ]);
        assert_eq!(
            json_patch(&v, &p).unwrap(),
            json!({"a": {"c": [1, 2, 3], "k/v": true}, "d": "x", "f": 2})
        );
        assert!(json_patch(&v, &json!([{"op": "test", "path": "/d", "value": 0}])).is_err());
        assert!(json_patch(&v, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
