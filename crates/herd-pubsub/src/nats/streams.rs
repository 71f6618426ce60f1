//! Which JetStream stream holds a topic: looked up on the server, or created, once per topic;
//! and the names herd gives streams and consumers.

use std::fmt::Write as _;
use std::sync::Arc;

use async_nats::jetstream::{
    self, ErrorCode,
    context::{CreateStreamErrorKind, GetStreamByNameErrorKind, GetStreamErrorKind},
    stream,
};

use super::{JetStream, unavailable};
use crate::error::PubSubError;

/// A topic NATS can publish to: `.`-separated non-empty tokens, no wildcard tokens, no
/// whitespace, not a system subject (`$JS.…`, `$SYS.…`).
pub(super) fn check_topic(topic: &str) -> Result<(), PubSubError> {
    let ok = !topic.starts_with('$')
        && topic.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(|c| c.is_whitespace() || c.is_control())
        });
    if ok {
        Ok(())
    } else {
        Err(PubSubError::Invalid(format!(
            "topic {topic:?} is not a NATS subject (non-empty '.'-separated tokens, no '*' or '>' \
             tokens, no whitespace, not starting with '$')"
        )))
    }
}

/// `s` as part of a stream or consumer name: ASCII letters, digits and `-` kept, every other
/// byte written as `_` and two hex digits (so distinct inputs give distinct names).
fn name_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// The stream herd creates for `topic` when `streamName` is not set.
pub(super) fn stream_name(topic: &str) -> String {
    name_part(topic)
}

/// The durable consumer of `group` on `topic`.
pub(super) fn consumer_name(group: &str, topic: &str) -> String {
    format!("{}__{}", name_part(group), name_part(topic))
}

/// The stream that holds a topic.
pub(super) struct Resolved {
    pub(super) stream: String,
    /// The stream accepts `Nats-TTL`.
    pub(super) ttl: bool,
}

impl JetStream {
    /// The stream holding `topic`, found or created on first use.
    pub(super) async fn stream_of(&self, topic: &str) -> Result<Arc<Resolved>, PubSubError> {
        check_topic(topic)?;
        let cell = self
            .topics
            .lock()
            .expect("poisoned")
            .entry(topic.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async { self.resolve(topic).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// Forgets `topic`'s stream, so the next use looks it up again (after a publish failed, the
    /// stream may have been deleted or replaced).
    pub(super) fn forget(&self, topic: &str) {
        self.topics.lock().expect("poisoned").remove(topic);
    }

    async fn resolve(&self, topic: &str) -> Result<Resolved, PubSubError> {
        // Each pass reads the server's state and changes it at most once; a concurrent change by
        // another client (two creating the same stream, or adding subjects to a shared stream at
        // once) shows in the next pass.
        for _ in 0..5 {
            let holder = match self.js.stream_by_subject(topic).await {
                Ok(name) => Some(name),
                Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => None,
                Err(e) => {
                    return Err(unavailable(format!(
                        "looking up the stream of {topic}: {e}"
                    )));
                }
            };
            match (holder, &self.settings.stream_name) {
                (Some(name), Some(wanted)) if &name != wanted => {
                    return Err(PubSubError::Invalid(format!(
                        "topic {topic} is held by stream {name}, not by streamName {wanted}"
                    )));
                }
                (Some(name), _) => {
                    let info = self.stream_info(&name).await?;
                    return Ok(Resolved {
                        ttl: self.server_ttl && allows_ttl(&info.config),
                        stream: name,
                    });
                }
                (None, Some(shared)) => match self.js.get_stream(shared).await {
                    Ok(mut stream) => {
                        let mut config = stream.info().await.map_err(unavailable)?.config.clone();
                        config.subjects.push(topic.to_string());
                        self.js.update_stream(&config).await.map_err(|e| {
                            unavailable(format!("adding {topic} to stream {shared}: {e}"))
                        })?;
                    }
                    Err(e) if stream_not_found(&e) => self.create(shared, topic).await?,
                    Err(e) => return Err(unavailable(format!("stream {shared}: {e}"))),
                },
                (None, None) => self.create(&stream_name(topic), topic).await?,
            }
        }
        Err(PubSubError::Unavailable(format!(
            "the stream of {topic} kept changing while it was being set up"
        )))
    }

    async fn stream_info(&self, name: &str) -> Result<stream::Info, PubSubError> {
        let mut stream = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| unavailable(format!("stream {name}: {e}")))?;
        stream
            .info()
            .await
            .cloned()
            .map_err(|e| unavailable(format!("stream {name}: {e}")))
    }

    /// Creates stream `name` for `topic`; one that already exists is left for the next pass.
    async fn create(&self, name: &str, topic: &str) -> Result<(), PubSubError> {
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![topic.to_string()],
            description: Some("herd pub/sub".to_string()),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.settings.replicas,
            max_age: self.settings.retention,
            duplicate_window: self.settings.dedupe_window,
            allow_message_ttl: self.server_ttl,
            ..Default::default()
        };
        match self.js.create_stream(config).await {
            Ok(_) => Ok(()),
            // Another client created it first, with other settings: fine if it holds the topic
            // (the next pass finds it), a name clash otherwise.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
            {
                let info = self.stream_info(name).await?;
                if info.config.subjects.iter().any(|s| s == topic) {
                    Ok(())
                } else {
                    Err(PubSubError::Invalid(format!(
                        "stream {name} exists and does not hold topic {topic}"
                    )))
                }
            }
            Err(e) => Err(unavailable(format!(
                "creating stream {name} for {topic}: {e}"
            ))),
        }
    }
}

fn stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn allows_ttl(config: &stream::Config) -> bool {
    config.allow_message_ttl
}
