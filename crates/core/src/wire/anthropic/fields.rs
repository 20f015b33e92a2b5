//! A JSON object kept as its fields in order, each value as the exact bytes it came in,
//! so a message assembled from a stream or rendered into one keeps the API's field order
//! and the bytes of values it does not touch (a tool's `input` above all).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's fields in the order they were written. Keys are unique: a repeated key
/// keeps its first position and its last value, as a JSON parser that keeps the last
/// value would see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(pub(crate) Vec<(String, Box<RawValue>)>);

impl Fields {
    pub(crate) fn get(&self, key: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// The field as a string, if it is one.
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    /// Replaces the value of `key` in place, or appends the field.
    pub(crate) fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Writes the object, with `replace` giving new raw values for some keys (`None`:
    /// leave the field out) and the others as they came.
    pub(crate) fn write_with<'r>(
        &self,
        out: &mut Vec<u8>,
        replace: impl Fn(&str) -> Option<Option<&'r str>>,
    ) {
        out.push(b'{');
        let mut first = true;
        for (k, v) in &self.0 {
            let value = match replace(k) {
                Some(None) => continue,
                Some(Some(r)) => r,
                None => v.get(),
            };
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_with(&mut out, |_| None);
        out
    }
}

/// A raw JSON value from text already known to be valid JSON (our own serialization);
/// `null` if it were not.
pub(crate) fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| null())
}

pub(crate) fn null() -> Box<RawValue> {
    #[allow(clippy::expect_used)] // a valid JSON literal (tested)
    RawValue::from_string("null".to_string()).expect("null is JSON")
}

/// A string as a raw JSON value.
pub(crate) fn raw_str(s: &str) -> Box<RawValue> {
    raw(serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string()))
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Fields(Vec::new());
                while let Some(k) = map.next_key::<String>()? {
                    let v: Box<RawValue> = map.next_value()?;
                    out.set(&k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses an object's fields; `None` for anything that is not a JSON object.
pub(crate) fn parse(json: &str) -> Option<Fields> {
    serde_json::from_str(json).ok()
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_bytes() {
        let f = parse(r#"{"b": 1.50, "a": {"z":1,"y":2}, "b": 2}"#).unwrap();
        assert_eq!(f.to_vec(), br#"{"b":2,"a":{"z":1,"y":2}}"#);
        assert_eq!(null().get(), "null");
        assert!(parse("[1]").is_none());
        let mut out = Vec::new();
        f.write_with(&mut out, |k| (k == "a").then_some(None));
        assert_eq!(out, br#"{"b":2}"#);
    }
}
