//! Reading component metadata, as Dapr's components read it: values are strings; an empty
//! value counts as absent; numbers, booleans (the forms of Go's `strconv.ParseBool`) and
//! durations (`1m30s`, `500ms`, or a bare number of milliseconds) are parsed, and a bad value
//! is a [`FieldError`] naming its key.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::settings::FieldError;

/// An error about metadata key `field`.
pub(crate) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: Some(field.to_string()),
        message: message.into(),
    }
}

/// The trimmed value of `key`, if set and not empty.
pub(crate) fn value<'a>(metadata: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// A number.
pub(crate) fn number<T: std::str::FromStr>(
    metadata: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, FieldError> {
    value(metadata, key)
        .map(|v| {
            v.parse()
                .map_err(|_| field_error(key, format!("invalid number {v:?}")))
        })
        .transpose()
}

/// A boolean.
pub(crate) fn boolean(
    metadata: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<bool>, FieldError> {
    value(metadata, key)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => Ok(true),
            "0" | "f" | "false" => Ok(false),
            _ => Err(field_error(key, format!("invalid boolean {v:?}"))),
        })
        .transpose()
}

/// A duration; a bare number is milliseconds.
pub(crate) fn duration(
    metadata: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<Duration>, FieldError> {
    value(metadata, key)
        .map(|v| match v.parse::<u64>() {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(_) => humantime::parse_duration(v)
                .map_err(|e| field_error(key, format!("invalid duration {v:?}: {e}"))),
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_dapr_reads_them() {
        let m: BTreeMap<String, String> = [
            ("n", "12"),
            ("b", "True"),
            ("d", "1m30s"),
            ("ms", "250"),
            ("empty", " "),
            ("bad", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(number::<u32>(&m, "n"), Ok(Some(12)));
        assert_eq!(boolean(&m, "b"), Ok(Some(true)));
        assert_eq!(duration(&m, "d"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(duration(&m, "ms"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(value(&m, "empty"), None);
        assert_eq!(number::<u32>(&m, "missing"), Ok(None));
        assert_eq!(
            number::<u32>(&m, "bad").unwrap_err().field.as_deref(),
            Some("bad")
        );
        assert!(boolean(&m, "bad").is_err());
        assert!(duration(&m, "bad").is_err());
    }
}
