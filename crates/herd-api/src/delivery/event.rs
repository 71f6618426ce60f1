//! The CloudEvent attributes delivery reads (`id`, `type`, `traceparent`, `tracestate`), taken
//! from a message in one pass: serde skips the rest (the data, often most of the bytes) without
//! building a JSON tree, and a message is read once per delivery.

use serde::{Deserialize, Deserializer};

/// What delivery needs from a CloudEvent; every field `None` when the message is not a JSON
/// object or the attribute is missing or not a string.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct EventHead {
    #[serde(default, deserialize_with = "string")]
    pub id: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub traceparent: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub tracestate: Option<String>,
    /// Not an attribute: whether the message is a JSON object at all.
    #[serde(skip)]
    pub is_object: bool,
}

impl EventHead {
    /// Reads the attributes of `data`.
    pub fn read(data: &[u8]) -> Self {
        // serde reads a struct from an array too: only an object counts.
        if data.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return EventHead::default();
        }
        match serde_json::from_slice::<EventHead>(data) {
            Ok(head) => EventHead {
                is_object: true,
                ..head
            },
            Err(_) => EventHead::default(),
        }
    }
}

/// A string attribute; any other JSON value counts as missing.
fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Loose>::deserialize(d)? {
        Some(Loose::Text(s)) => Some(s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_and_everything_else_skipped() {
        let head = EventHead::read(
            br#"{"id":"1","type":"order.created","data":{"big":[1,2,3]},"traceparent":"00-x","extra":null}"#,
        );
        assert!(head.is_object);
        assert_eq!(head.id.as_deref(), Some("1"));
        assert_eq!(head.kind.as_deref(), Some("order.created"));
        assert_eq!(head.traceparent.as_deref(), Some("00-x"));
        assert_eq!(head.tracestate, None);
        // A number where a string belongs is no attribute, and spoils nothing else.
        let head = EventHead::read(br#"{"id":7,"type":"t"}"#);
        assert_eq!((head.id, head.kind.as_deref()), (None, Some("t")));
        // Not JSON, or JSON but no object.
        assert_eq!(EventHead::read(b"raw bytes"), EventHead::default());
        assert!(!EventHead::read(b"[1]").is_object);
    }
}
