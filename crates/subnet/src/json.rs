//! Reading flannel's JSON the way Go's `encoding/json` does: object keys
//! match struct fields case-insensitively (an exact match wins), `null`
//! leaves a field at its default, and a value of the wrong type is an error.

use serde_json::{Map, Value};

/// Go's `EqualFold` for ASCII field names, plus the two non-ASCII letters
/// Go's simple folding maps onto ASCII (KELVIN SIGN → k, LONG S → s).
fn fold(c: char) -> char {
    match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    }
}

fn equal_fold(a: &str, b: &str) -> bool {
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// The value of field `name` in `obj`: the exactly named key if present,
/// else a key equal to it under case folding. `null` counts as absent.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let v = obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| equal_fold(k, name))
            .map(|(_, v)| v)
    })?;
    (!v.is_null()).then_some(v)
}

/// A field that must be a string when present.
pub(crate) fn str_field<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("{name} must be a string, not {v}")),
    }
}

/// A field that must be a boolean when present.
pub(crate) fn bool_field(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, String> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(format!("{name} must be true or false, not {v}")),
    }
}

/// A field that must be a non-negative integer no larger than `max`.
pub(crate) fn uint_field(
    obj: &Map<String, Value>,
    name: &str,
    max: u64,
) -> Result<Option<u64>, String> {
    match field(obj, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(format!(
                "{name} must be an integer from 0 to {max}, not {v}"
            )),
        },
    }
}

/// The document as an object.
pub(crate) fn object(json: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(v) => Err(format!("expected a JSON object, not {v}")),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_match_wins_then_case_folding() {
        let v = json!({"network": "a", "Network": "b", "subnetlen": 1});
        let m = v.as_object().unwrap();
        assert_eq!(field(m, "Network"), Some(&json!("b")));
        assert_eq!(field(m, "SubnetLen"), Some(&json!(1)));
        assert_eq!(field(m, "SubnetMin"), None);
    }

    #[test]
    fn kelvin_sign_folds_to_k_as_in_go() {
        let v = json!({"ba\u{212A}end": 1});
        assert!(field(v.as_object().unwrap(), "BaKend").is_some());
    }

    #[test]
    fn null_is_absent_and_wrong_types_are_errors() {
        let v = json!({"EnableIPv6": null, "SubnetLen": "24", "Port": 70000});
        let m = v.as_object().unwrap();
        assert_eq!(bool_field(m, "EnableIPv6"), Ok(None));
        assert!(uint_field(m, "SubnetLen", 32).is_err());
        assert!(uint_field(m, "Port", 65535).is_err());
    }
}
