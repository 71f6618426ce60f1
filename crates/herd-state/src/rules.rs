//! The concurrency rules of `store.rs`, as one function for backends that evaluate them in Rust
//! (the embedded store; Redis and PostgreSQL evaluate the same rules in Lua and SQL).

use crate::error::StateError;
use crate::store::{Concurrency, Guard};

/// What a write needs to know about the key it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// The key's version, if it exists (and has not expired).
    pub version: Option<u64>,
    /// The highest fencing token the key was written with.
    pub fence: u64,
}

/// Parses an ETag this store issued.
pub fn parse_etag(key: &str, etag: &str) -> Result<u64, StateError> {
    etag.parse().map_err(|_| StateError::EtagInvalid {
        key: key.to_string(),
        etag: etag.to_string(),
    })
}

/// Decides whether a write guarded by `guard` may touch `key` in state `current`.
pub fn check(key: &str, guard: &Guard, current: Current) -> Result<(), StateError> {
    if let Some(token) = guard.fence
        && token < current.fence
    {
        return Err(StateError::Fenced {
            key: key.to_string(),
            token,
            seen: current.fence,
        });
    }
    let mismatch = || StateError::EtagMismatch {
        key: key.to_string(),
    };
    match (&guard.etag, guard.concurrency) {
        (_, Concurrency::LastWrite) => Ok(()),
        (Some(etag), _) => {
            let wanted = parse_etag(key, etag)?;
            if current.version == Some(wanted) {
                Ok(())
            } else {
                Err(mismatch())
            }
        }
        (None, Concurrency::FirstWrite) if current.version.is_some() => Err(mismatch()),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(etag: Option<&str>, concurrency: Concurrency, fence: Option<u64>) -> Guard {
        Guard {
            etag: etag.map(str::to_string),
            concurrency,
            fence,
            ..Guard::default()
        }
    }

    const PRESENT: Current = Current {
        version: Some(7),
        fence: 0,
    };
    const MISSING: Current = Current {
        version: None,
        fence: 0,
    };

    #[test]
    fn etag_must_match_unless_last_write() {
        let g = guard(Some("7"), Concurrency::Unspecified, None);
        assert_eq!(check("k", &g, PRESENT), Ok(()));
        let g = guard(Some("6"), Concurrency::FirstWrite, None);
        assert!(matches!(
            check("k", &g, PRESENT),
            Err(StateError::EtagMismatch { .. })
        ));
        assert!(matches!(
            check("k", &g, MISSING),
            Err(StateError::EtagMismatch { .. })
        ));
        let g = guard(Some("6"), Concurrency::LastWrite, None);
        assert_eq!(check("k", &g, PRESENT), Ok(()));
    }

    #[test]
    fn first_write_without_etag_only_creates() {
        let g = guard(None, Concurrency::FirstWrite, None);
        assert_eq!(check("k", &g, MISSING), Ok(()));
        assert!(check("k", &g, PRESENT).is_err());
        let g = guard(None, Concurrency::Unspecified, None);
        assert_eq!(check("k", &g, PRESENT), Ok(()));
    }

    #[test]
    fn bad_etag_is_invalid_not_a_mismatch() {
        let g = guard(Some("abc"), Concurrency::FirstWrite, None);
        assert!(matches!(
            check("k", &g, PRESENT),
            Err(StateError::EtagInvalid { .. })
        ));
    }

    #[test]
    fn lower_fencing_token_is_refused_even_under_last_write() {
        let seen = Current {
            version: Some(1),
            fence: 5,
        };
        let g = guard(None, Concurrency::LastWrite, Some(4));
        assert!(matches!(
            check("k", &g, seen),
            Err(StateError::Fenced {
                token: 4,
                seen: 5,
                ..
            })
        ));
        let g = guard(None, Concurrency::LastWrite, Some(5));
        assert_eq!(check("k", &g, seen), Ok(()));
    }
}
