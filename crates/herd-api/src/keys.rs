//! Dapr's key prefixes: what a state key or lock resource is stored under.
//!
//! With the component metadata `keyPrefix` = `appid` (the default) the stored key is
//! `<app-id>||<key>`, so apps sharing a store do not see each other's keys; `name` uses the
//! component name, `none` stores the key as it is, and any other value is used as a fixed
//! prefix. Keys may not contain `||` (Dapr refuses them too), nor be longer than
//! [`MAX_KEY`](crate::limits::MAX_KEY) bytes.

use crate::error::ApiError;

/// How a component prefixes keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPrefix {
    /// `<app-id>||`.
    AppId,
    /// `<component name>||`.
    Name(String),
    /// No prefix.
    None,
    /// A fixed `<text>||`.
    Fixed(String),
}

impl KeyPrefix {
    /// Reads the `keyPrefix` metadata of component `name`.
    pub fn from_metadata(value: Option<&str>, name: &str) -> Self {
        match value {
            None | Some("") | Some("appid") => KeyPrefix::AppId,
            Some("name") => KeyPrefix::Name(name.to_string()),
            Some("none") => KeyPrefix::None,
            Some(other) => KeyPrefix::Fixed(other.to_string()),
        }
    }

    /// The stored key for `key` as `app` sees it.
    pub fn apply(&self, app: &str, key: &str) -> Result<String, ApiError> {
        if key.is_empty() {
            return Err(ApiError::malformed("key is empty"));
        }
        crate::limits::key(key)?;
        if key.contains("||") {
            return Err(ApiError::malformed(format!(
                "input key {key:?} can't contain '||'"
            )));
        }
        Ok(match self {
            KeyPrefix::AppId => format!("{app}||{key}"),
            KeyPrefix::Name(p) | KeyPrefix::Fixed(p) => format!("{p}||{key}"),
            KeyPrefix::None => key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_dapr() {
        assert_eq!(
            KeyPrefix::from_metadata(None, "s")
                .apply("app", "k")
                .unwrap(),
            "app||k"
        );
        assert_eq!(
            KeyPrefix::from_metadata(Some("name"), "s")
                .apply("app", "k")
                .unwrap(),
            "s||k"
        );
        assert_eq!(
            KeyPrefix::from_metadata(Some("none"), "s")
                .apply("app", "k")
                .unwrap(),
            "k"
        );
        assert_eq!(
            KeyPrefix::from_metadata(Some("shop"), "s")
                .apply("app", "k")
                .unwrap(),
            "shop||k"
        );
        assert!(KeyPrefix::AppId.apply("app", "a||b").is_err());
        assert!(KeyPrefix::AppId.apply("app", "").is_err());
    }
}
