//! Helpers the crate's unit tests and `tests/conformance.rs` share: messages, consume options,
//! waiting for a delivery (or for none), names unique to a test run, metadata maps. Built for the
//! crate's own tests (the `testing` feature, which its dev-dependency on itself turns on); not
//! part of the API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::{ConsumeOptions, Consumer, Delivery, EmbeddedLog, EmbeddedSettings, Message};

/// A message with body `body` and nothing else set.
pub fn message(body: &str) -> Message {
    Message {
        data: Bytes::from(body.to_string()),
        id: None,
        ttl: None,
        metadata: Default::default(),
    }
}

/// Consume options.
pub fn options(max_in_flight: u32, ack_timeout: Duration) -> ConsumeOptions {
    ConsumeOptions {
        max_in_flight,
        ack_timeout,
    }
}

/// The next delivery, which must come within 10 s and not be an error.
pub async fn next(consumer: &mut Box<dyn Consumer>) -> Box<dyn Delivery> {
    next_within(consumer, Duration::from_secs(10)).await
}

/// The next delivery, which must come within `limit` and not be an error.
pub async fn next_within(consumer: &mut Box<dyn Consumer>, limit: Duration) -> Box<dyn Delivery> {
    tokio::time::timeout(limit, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("a delivery within {limit:?}"))
        .expect("the consumer is open")
        .expect("no error")
}

/// Asserts nothing is delivered for a while.
pub async fn quiet(consumer: &mut Box<dyn Consumer>, what: &str) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        let body = d.map(|d| d.data().clone());
        panic!("{what}: got {body:?}");
    }
}

/// A delivery's body as text.
pub fn text(d: &dyn Delivery) -> String {
    String::from_utf8(d.data().to_vec()).unwrap()
}

/// A suffix unique to this run, for topic and group names on a shared server.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}x{nanos:x}", std::process::id())
}

/// A metadata map from `(key, value)` pairs.
pub fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An embedded log in `dir`, with the default settings. Must be called inside a tokio runtime.
pub fn embedded_log(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(&dir.join("log.redb"), EmbeddedSettings::default()).unwrap()
}
