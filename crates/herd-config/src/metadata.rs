//! Reading a component's metadata, for the crates that serve components (herd-state and
//! herd-pubsub check the keys of their backends; this crate only carries the map).
//!
//! Metadata values are strings, and an empty value counts as absent. A [`Metadata`] reader
//! parses numbers, booleans, durations and whole seconds, and remembers which keys were asked
//! for, so a caller can report the ones nothing read ([`Metadata::unused`]). A bad value is a
//! [`FieldError`] naming its key; the binary turns it into a config error located in the file
//! that declared the component ([`Config::component_error`](crate::Config::component_error)).
//!
//! A reader follows one of two sets of [`Rules`]: [`Rules::Dapr`], as Dapr's components read
//! their metadata (the pub/sub backends), and [`Rules::Literal`], values taken exactly as written
//! (the state stores).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// A metadata problem: which key (if one is to blame) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The metadata key at fault; `None` when the component as a whole is (its type).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// An error about metadata key `field`.
pub fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: Some(field.to_string()),
        message: message.into(),
    }
}

/// The error for a component type that no backend of the crate serves; `kinds` are the ones it
/// does.
pub fn unsupported(kind: &str, kinds: &[&str]) -> FieldError {
    FieldError {
        field: None,
        message: format!(
            "unsupported component type {kind:?}; herd serves {}",
            kinds.join(", ")
        ),
    }
}

/// How a [`Metadata`] reader turns strings into values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// As Dapr's components read metadata: white space around a value is trimmed; booleans take
    /// the forms of Go's `strconv.ParseBool` (`1`, `t`, `true`, `0`, `f`, `false`, any case);
    /// a duration is a bare number of milliseconds or a humantime string (`1m30s`, `500ms`).
    /// A bad number reads "invalid number", a bad boolean "invalid boolean".
    Dapr,
    /// Values exactly as written (no trimming); booleans are `true` or `false`; durations are
    /// humantime strings only. A bad number or boolean reads "invalid value".
    Literal,
}

/// Reads the values of one component's metadata and remembers which keys were asked for.
pub struct Metadata<'a> {
    map: &'a BTreeMap<String, String>,
    rules: Rules,
    used: RefCell<Vec<String>>,
}

impl<'a> Metadata<'a> {
    /// A reader of `map` under `rules`.
    pub fn new(map: &'a BTreeMap<String, String>, rules: Rules) -> Self {
        Self {
            map,
            rules,
            used: RefCell::new(Vec::new()),
        }
    }

    /// The value of `key`, if set and not empty (trimmed under [`Rules::Dapr`]).
    pub fn value(&self, key: &str) -> Option<&'a str> {
        let value = self.verbatim(key);
        match self.rules {
            Rules::Dapr => value.map(str::trim).filter(|v| !v.is_empty()),
            Rules::Literal => value,
        }
    }

    /// The value of `key` exactly as written, if set and not empty, whatever the rules (for a
    /// file path, where white space is part of the name).
    pub fn verbatim(&self, key: &str) -> Option<&'a str> {
        self.used.borrow_mut().push(key.to_string());
        self.map
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A number (or anything else `FromStr` reads).
    pub fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>, FieldError> {
        let what = match self.rules {
            Rules::Dapr => "invalid number",
            Rules::Literal => "invalid value",
        };
        self.value(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| field_error(key, format!("{what} {v:?}")))
            })
            .transpose()
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, FieldError> {
        if self.rules == Rules::Literal {
            return self.number(key);
        }
        self.value(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "1" | "t" | "true" => Ok(true),
                "0" | "f" | "false" => Ok(false),
                _ => Err(field_error(key, format!("invalid boolean {v:?}"))),
            })
            .transpose()
    }

    /// A duration; under [`Rules::Dapr`] a bare number is milliseconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, FieldError> {
        self.value(key)
            .map(|v| match (self.rules, v.parse::<u64>()) {
                (Rules::Dapr, Ok(ms)) => Ok(Duration::from_millis(ms)),
                _ => crate::duration::parse(v)
                    .map_err(|e| field_error(key, format!("invalid duration {v:?}: {e}"))),
            })
            .transpose()
    }

    /// A whole number of seconds, at least 1.
    pub fn seconds(&self, key: &str) -> Result<Option<Duration>, FieldError> {
        match self.number::<u64>(key)? {
            Some(0) => Err(field_error(key, "must be at least 1")),
            s => Ok(s.map(Duration::from_secs)),
        }
    }

    /// The keys of the map nothing asked for, leaving out `ignored` (keys another layer reads),
    /// in key order.
    pub fn unused(&self, ignored: &[&str]) -> Vec<String> {
        let used = self.used.borrow();
        self.map
            .keys()
            .filter(|k| !used.contains(k) && !ignored.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

/// The `user:password@` part of a URL, percent-encoded, for backends whose metadata names user
/// and password apart from the address (Dapr's Redis components); empty without either.
pub fn userinfo(username: Option<&str>, password: Option<&str>) -> String {
    match (username, password) {
        (None, None) => String::new(),
        (u, p) => format!(
            "{}:{}@",
            percent_encode(u.unwrap_or("")),
            percent_encode(p.unwrap_or(""))
        ),
    }
}

/// Percent-encodes a URL user-info part.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn values_parse_as_dapr_reads_them() {
        let m = map(&[
            ("n", "12"),
            ("b", "True"),
            ("d", "1m30s"),
            ("ms", "250"),
            ("empty", " "),
            ("bad", "x"),
        ]);
        let m = Metadata::new(&m, Rules::Dapr);
        assert_eq!(m.number::<u32>("n"), Ok(Some(12)));
        assert_eq!(m.boolean("b"), Ok(Some(true)));
        assert_eq!(m.duration("d"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(m.duration("ms"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(m.value("empty"), None);
        assert_eq!(m.verbatim("empty"), Some(" "));
        assert_eq!(m.number::<u32>("missing"), Ok(None));
        assert_eq!(
            m.number::<u32>("bad").unwrap_err().field.as_deref(),
            Some("bad")
        );
        assert!(m.boolean("bad").is_err());
        assert!(m.duration("bad").is_err());
    }

    #[test]
    fn literal_values_are_taken_as_written() {
        let m = map(&[
            ("padded", " p@ss "),
            ("n", "12"),
            ("padded_n", " 12"),
            ("b", "true"),
            ("go_b", "1"),
            ("d", "1500ms"),
            ("ms", "250"),
            ("zero", "0"),
        ]);
        let m = Metadata::new(&m, Rules::Literal);
        assert_eq!(m.value("padded"), Some(" p@ss "));
        assert_eq!(m.number::<u32>("n"), Ok(Some(12)));
        let err = m.number::<u32>("padded_n").unwrap_err();
        assert_eq!(err.message, "invalid value \" 12\"");
        assert_eq!(m.boolean("b"), Ok(Some(true)));
        assert_eq!(
            m.boolean("go_b").unwrap_err().field.as_deref(),
            Some("go_b")
        );
        assert_eq!(m.duration("d"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(m.duration("ms").unwrap_err().field.as_deref(), Some("ms"));
        assert_eq!(m.duration("zero"), Ok(Some(Duration::ZERO)));
    }

    #[test]
    fn seconds_are_whole_and_positive() {
        let m = map(&[("t", "5"), ("zero", "0"), ("half", "0.5")]);
        let m = Metadata::new(&m, Rules::Dapr);
        assert_eq!(m.seconds("t"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(m.seconds("missing"), Ok(None));
        assert_eq!(
            m.seconds("zero").unwrap_err(),
            field_error("zero", "must be at least 1")
        );
        assert!(m.seconds("half").is_err());
    }

    #[test]
    fn unused_keys_are_those_nothing_asked_for() {
        let m = map(&[("a", "1"), ("b", ""), ("c", "3"), ("keyPrefix", "none")]);
        let m = Metadata::new(&m, Rules::Literal);
        assert_eq!(m.value("a"), Some("1"));
        // Asking counts even when the value is empty.
        assert_eq!(m.value("b"), None);
        assert_eq!(m.unused(&["keyPrefix"]), vec!["c".to_string()]);
    }

    #[test]
    fn userinfo_is_percent_encoded() {
        assert_eq!(userinfo(None, None), "");
        assert_eq!(userinfo(None, Some("p@ss")), ":p%40ss@");
        assert_eq!(
            userinfo(Some("app"), Some("p@ss:w/rd")),
            "app:p%40ss%3Aw%2Frd@"
        );
        assert_eq!(
            unsupported("x.y", &["a", "b"]).message,
            "unsupported component type \"x.y\"; herd serves a, b"
        );
    }
}
