//! `[api]`, `[[component]]` and `[[subscription]]` as serde reads them: the sidecar API and
//! the building blocks it serves. Checked in `api.rs`.

use std::collections::BTreeMap;

use bytesize::ByteSize;
use serde::Deserialize;

/// `[api]`: the sidecar API server, Dapr's HTTP API v1.0.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Address for callers outside herd's services. Default: `"127.0.0.1:3500"`. Each service's
    /// instances get a loopback listener of their own (in `DAPR_HTTP_PORT`), which tells herd
    /// their app id.
    pub listen: Option<String>,
    /// Address of Dapr's gRPC API (`dapr.proto.runtime.v1.Dapr`) for callers outside herd's
    /// services, or `""` for none. Default: `"127.0.0.1:50001"` (Dapr's default); when that
    /// default is taken, herd warns and runs without it. Each service's instances get a
    /// loopback gRPC listener of their own (in `DAPR_GRPC_PORT`) either way.
    pub grpc_listen: Option<String>,
    /// The app id of requests on `listen` (instances use their service name). Default: `"herd"`.
    pub app_id: Option<String>,
    /// Largest request body accepted, e.g. `"4MB"`. Default: 4 MB (Dapr's default).
    pub max_body: Option<ByteSize>,
    /// Directories of Dapr resource files (`*.yaml`, `*.yml`) whose `Component`s,
    /// `Subscription`s and `Resiliency` documents are loaded beside `[[component]]`,
    /// `[[subscription]]` and `[resiliency]`, as `dapr run --resources-path` does. Relative to
    /// this file.
    #[serde(default)]
    pub resources_path: Vec<String>,
}

/// One `[[component]]`, as in a Dapr component file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponent {
    /// The name requests address it by, e.g. `statestore` in `/v1.0/state/statestore`.
    pub name: String,
    /// Dapr's component type: `state.embedded` (herd's own, durable, in the data directory),
    /// `state.redis`, `state.postgresql`, `lock.embedded` or `lock.redis`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Settings with Dapr's metadata names, e.g. `{ redisHost = "127.0.0.1:6379" }`; see the
    /// README's component reference for each type's keys.
    #[serde(default)]
    pub metadata: BTreeMap<String, RawMetaValue>,
    /// Services allowed to use the component; empty means all.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A metadata value: Dapr's are strings, TOML's may be numbers or booleans too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawMetaValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl RawMetaValue {
    /// The value as Dapr would see it: a string.
    pub fn into_text(self) -> String {
        match self {
            RawMetaValue::Text(s) => s,
            RawMetaValue::Integer(i) => i.to_string(),
            RawMetaValue::Float(f) => f.to_string(),
            RawMetaValue::Bool(b) => b.to_string(),
        }
    }
}

/// One `[[subscription]]`: messages of `topic` on `pubsub` delivered to `service`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscription {
    /// The subscribing service; its instances share the messages (one consumer group).
    pub service: String,
    /// The pub/sub component.
    pub pubsub: String,
    /// The topic.
    pub topic: String,
    /// Path the CloudEvent is POSTed to when no rule matches, e.g. `"/orders"`.
    pub route: String,
    /// Routing rules tried in order: `{ match = 'event.type == "order.created"', path = "/created" }`.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Where messages go that the app dropped or that failed `max_deliveries` times.
    pub dead_letter_topic: Option<String>,
    /// Deliveries to the app in flight at once, at most. Default: 16.
    pub max_in_flight: Option<u32>,
    /// Deliver one message at a time, in publish order. Default: false.
    #[serde(default)]
    pub in_order: bool,
    /// Deliveries of one message before it is dead-lettered (or dropped without a dead-letter
    /// topic). Default: 10.
    pub max_deliveries: Option<u32>,
    /// Dapr's bulk subscribe: `{ enabled = true, max_messages_count = 100,
    /// max_await_duration_ms = 1000 }` POSTs messages to the app in batches (Dapr's bulk
    /// envelope; the app answers a status per entry). Default: off.
    pub bulk_subscribe: Option<RawBulkSubscribe>,
}

/// A subscription's `bulk_subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBulkSubscribe {
    /// On or off. Default: true once the table is there.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Messages per batch at most. Default: 100.
    pub max_messages_count: Option<u32>,
    /// Milliseconds a batch waits to fill after its first message. Default: 1000.
    pub max_await_duration_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A routing rule of a subscription.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// `event.type == "<type>"` (the form herd evaluates).
    #[serde(rename = "match")]
    pub matches: String,
    /// The path for matching events.
    pub path: String,
}
