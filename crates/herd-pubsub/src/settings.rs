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
use crate::nats::{self, JetStream, NatsSettings};
use crate::rabbitmq::{self, RabbitMq, RabbitMqSettings};
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
    Jetstream(Box<NatsSettings>),
    /// A RabbitMQ broker.
    Rabbitmq(Box<RabbitMqSettings>),
    /// A Redis server, used through Redis Streams.
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
        "pubsub.jetstream" => Backend::Jetstream(Box::new(nats::settings::configure(&m)?)),
        "pubsub.rabbitmq" => Backend::Rabbitmq(Box::new(rabbitmq::settings::configure(&m)?)),
        "pubsub.redis" => Backend::Redis(Box::new(redis_streams::settings::configure(&m)?)),
        other => return Err(unsupported(other, KINDS)),
    })
}

/// Opens a configured backend. Must be called inside a tokio runtime.
pub async fn open(backend: &Backend) -> Result<Arc<dyn PubSub>, PubSubError> {
    Ok(match backend {
        Backend::Embedded(path, settings) => Arc::new(EmbeddedLog::open(path, settings.clone())?),
        Backend::Jetstream(settings) => Arc::new(JetStream::connect((**settings).clone()).await?),
        Backend::Rabbitmq(settings) => Arc::new(RabbitMq::open((**settings).clone()).await?),
        Backend::Redis(settings) => Arc::new(RedisStreams::connect((**settings).clone()).await?),
    })
}

#[cfg(test)]
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
