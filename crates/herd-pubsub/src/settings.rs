//! Component metadata → a [`Backend`] ([`configure`]), and a backend → a running broker
//! ([`open`]), as for state stores: bad metadata is a config error at start-up, a broker that
//! cannot be reached is retried by the caller.
//!
//! This only dispatches: each backend reads its own keys (`<backend>/settings.rs`, by Dapr's
//! rules of [`herd_config::metadata`]) and opens itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_config::metadata::{FieldError, Metadata, Rules, unsupported};

use crate::PubSub;
use crate::embedded::{self, EmbeddedLog, EmbeddedSettings};
use crate::error::PubSubError;
#[cfg(feature = "nats")]
use crate::nats::{self, JetStream, NatsSettings};
#[cfg(feature = "rabbitmq")]
use crate::rabbitmq::{self, RabbitMq, RabbitMqSettings};
#[cfg(feature = "redis")]
use crate::redis_streams::{self, RedisStreams, RedisStreamsSettings};

/// Component types this crate serves.
pub const KINDS: &[&str] = &[
    "pubsub.embedded",
    "pubsub.jetstream",
    "pubsub.rabbitmq",
    "pubsub.redis",
];

/// A configured backend, ready to be opened.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded log: its file and settings.
    Embedded(PathBuf, EmbeddedSettings),
    /// A NATS JetStream server.
    #[cfg(feature = "nats")]
    Jetstream(Box<NatsSettings>),
    /// A RabbitMQ broker.
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(Box<RabbitMqSettings>),
    /// A Redis server, used through Redis Streams.
    #[cfg(feature = "redis")]
    Redis(Box<RedisStreamsSettings>),
}

/// Builds the backend of component `name` of type `kind`; relative paths are resolved against
/// `data_dir`.
pub fn configure(
    name: &str,
    kind: &str,
    metadata: &BTreeMap<String, String>,
    data_dir: &Path,
) -> Result<Backend, FieldError> {
    let m = Metadata::new(metadata, Rules::Dapr);
    Ok(match kind {
        "pubsub.embedded" => {
            let (path, settings) = embedded::settings::configure(name, &m, data_dir)?;
            Backend::Embedded(path, settings)
        }
        #[cfg(feature = "nats")]
        "pubsub.jetstream" => Backend::Jetstream(Box::new(nats::settings::configure(&m)?)),
        #[cfg(feature = "rabbitmq")]
        "pubsub.rabbitmq" => Backend::Rabbitmq(Box::new(rabbitmq::settings::configure(&m)?)),
        #[cfg(feature = "redis")]
        "pubsub.redis" => Backend::Redis(Box::new(redis_streams::settings::configure(&m)?)),
        #[cfg(not(feature = "nats"))]
        "pubsub.jetstream" => return Err(left_out(kind, "nats")),
        #[cfg(not(feature = "rabbitmq"))]
        "pubsub.rabbitmq" => return Err(left_out(kind, "rabbitmq")),
        #[cfg(not(feature = "redis"))]
        "pubsub.redis" => return Err(left_out(kind, "redis")),
        other => return Err(unsupported(other, KINDS)),
    })
}

/// The error for a component type this crate serves, but whose backend this build left out.
#[cfg(not(all(feature = "nats", feature = "rabbitmq", feature = "redis")))]
fn left_out(kind: &str, feature: &str) -> FieldError {
    FieldError {
        field: None,
        message: format!(
            "component type {kind} is not in this build of herd (built without the herd-pubsub feature `{feature}`)"
        ),
    }
}

/// Opens a configured backend. Must be called inside a tokio runtime.
pub async fn open(backend: &Backend) -> Result<Arc<dyn PubSub>, PubSubError> {
    Ok(match backend {
        Backend::Embedded(path, settings) => Arc::new(EmbeddedLog::open(path, settings.clone())?),
        #[cfg(feature = "nats")]
        Backend::Jetstream(settings) => Arc::new(JetStream::connect((**settings).clone()).await?),
        #[cfg(feature = "rabbitmq")]
        Backend::Rabbitmq(settings) => Arc::new(RabbitMq::open((**settings).clone()).await?),
        #[cfg(feature = "redis")]
        Backend::Redis(settings) => Arc::new(RedisStreams::connect((**settings).clone()).await?),
    })
}

/// Run with `cargo test -p herd-pubsub --no-default-features --features testing`.
#[cfg(all(
    test,
    not(all(feature = "nats", feature = "rabbitmq", feature = "redis"))
))]
mod left_out {
    use super::*;
    use crate::testing::meta;

    #[test]
    fn a_backend_left_out_of_the_build_is_a_config_error_naming_its_feature() {
        let built = [
            ("pubsub.jetstream", "nats", cfg!(feature = "nats")),
            ("pubsub.rabbitmq", "rabbitmq", cfg!(feature = "rabbitmq")),
            ("pubsub.redis", "redis", cfg!(feature = "redis")),
        ];
        for (kind, feature, _) in built.iter().filter(|(_, _, built)| !built) {
            let err = configure("p", kind, &meta(&[]), Path::new("/d")).unwrap_err();
            assert_eq!(err.field, None);
            assert!(
                err.message.contains(kind) && err.message.contains(&format!("`{feature}`")),
                "{}",
                err.message
            );
        }
        assert!(configure("p", "pubsub.embedded", &meta(&[]), Path::new("/d")).is_ok());
    }
}

#[cfg(all(test, feature = "nats", feature = "rabbitmq", feature = "redis"))]
mod tests {
    use super::*;
    use crate::testing::meta;

    #[test]
    fn configure_serves_jetstream() {
        assert!(KINDS.contains(&"pubsub.jetstream"));
        let Ok(Backend::Jetstream(s)) = configure(
            "events",
            "pubsub.jetstream",
            &meta(&[("natsURL", "nats://n:4222"), ("streamName", "EVENTS")]),
            Path::new("/d"),
        ) else {
            panic!("not a jetstream backend");
        };
        assert_eq!(s.stream_name.as_deref(), Some("EVENTS"));
        let err = configure("events", "pubsub.jetstream", &meta(&[]), Path::new("/d")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("natsURL"));
    }

    #[test]
    fn configure_serves_rabbitmq() {
        let backend = configure(
            "events",
            "pubsub.rabbitmq",
            &meta(&[("connectionString", "amqp://guest:secret@rabbit:5672/%2f")]),
            Path::new("/d"),
        )
        .unwrap();
        assert!(matches!(backend, Backend::Rabbitmq(_)));
        assert!(KINDS.contains(&"pubsub.rabbitmq"));
    }

    #[test]
    fn configure_serves_redis() {
        assert!(KINDS.contains(&"pubsub.redis"));
        let dir = Path::new("/d");
        let backend = configure(
            "events",
            "pubsub.redis",
            &meta(&[("redisHost", "h:1")]),
            dir,
        );
        assert!(
            matches!(&backend, Ok(Backend::Redis(s)) if s.host == "h:1"),
            "{backend:?}"
        );
        let err = configure("events", "pubsub.redis", &meta(&[]), dir).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("redisHost"));
    }

    #[test]
    fn embedded_defaults_and_bad_durations() {
        let none = BTreeMap::new();
        let Backend::Embedded(path, settings) =
            configure("events", "pubsub.embedded", &none, Path::new("/d")).unwrap()
        else {
            panic!("not the embedded backend");
        };
        assert_eq!(path, Path::new("/d/pubsub/events.redb"));
        assert_eq!(settings, EmbeddedSettings::default());
        let bad = BTreeMap::from([("retention".to_string(), "forever".to_string())]);
        let err = configure("events", "pubsub.embedded", &bad, Path::new("/d")).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("retention"));
        assert!(configure("e", "pubsub.kafka", &none, Path::new("/d")).is_err());
    }
}
