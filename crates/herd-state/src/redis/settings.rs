//! `state.redis` and `lock.redis` metadata → [`RedisSettings`]: the keys of Dapr's Redis state
//! store that herd uses, read as written.

use std::time::Duration;

use herd_config::metadata::{FieldError, Metadata, field_error, userinfo};

/// Connection settings read from the component's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Replicas a `strong` write waits for.
    pub replicas: u32,
    /// How long a `strong` write waits for them.
    pub strong_timeout: Duration,
    /// Timeout of every command.
    pub timeout: Duration,
    /// The prefix of the component's outbox keys: `herd-outbox||<component>`, or
    /// `<keyPrefix>||herd-outbox||<component>` when `keyPrefix` is a fixed text, so that stores
    /// sharing one Redis under different fixed prefixes keep their outboxes apart too.
    pub outbox_key: String,
}

/// Where component `name` keeps its outbox, given its `keyPrefix` (Dapr's values `appid`,
/// `name` and `none` name no namespace of their own; any other value is one).
fn outbox_key(name: &str, key_prefix: Option<&str>) -> String {
    match key_prefix {
        None | Some("" | "appid" | "name" | "none") => format!("herd-outbox||{name}"),
        Some(prefix) => format!("{prefix}||herd-outbox||{name}"),
    }
}

/// The settings of a `state.redis` or `lock.redis` component.
pub(crate) fn configure(name: &str, meta: &Metadata<'_>) -> Result<RedisSettings, FieldError> {
    let host = meta
        .value("redisHost")
        .ok_or_else(|| field_error("redisHost", "required (host:port)"))?;
    if !host.contains(':') {
        return Err(field_error(
            "redisHost",
            format!("{host:?} is not host:port"),
        ));
    }
    if meta.boolean("enableTLS")?.unwrap_or(false) {
        return Err(field_error(
            "enableTLS",
            "TLS to Redis is not supported yet",
        ));
    }
    let db: u32 = meta.number("redisDB")?.unwrap_or(0);
    let auth = userinfo(meta.value("redisUsername"), meta.value("redisPassword"));
    Ok(RedisSettings {
        url: format!("redis://{auth}{host}/{db}"),
        replicas: meta.number("replicas")?.unwrap_or(0),
        strong_timeout: meta
            .duration("strongTimeout")?
            .unwrap_or(Duration::from_secs(1)),
        timeout: meta
            .duration("readTimeout")?
            .unwrap_or(Duration::from_secs(5)),
        outbox_key: outbox_key(name, meta.value("keyPrefix")),
    })
}

#[cfg(test)]
mod tests {
    use super::outbox_key;

    #[test]
    fn a_fixed_key_prefix_holds_the_outbox_too() {
        assert_eq!(outbox_key("orders", None), "herd-outbox||orders");
        for dapr in ["", "appid", "name", "none"] {
            assert_eq!(outbox_key("orders", Some(dapr)), "herd-outbox||orders");
        }
        assert_eq!(
            outbox_key("orders", Some("shop7")),
            "shop7||herd-outbox||orders"
        );
    }
}
