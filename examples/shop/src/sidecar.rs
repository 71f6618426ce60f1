//! A small client of the sidecar API (Dapr's HTTP API) on `DAPR_HTTP_PORT`: state get and bulk
//! get with ETags, saves and transactions with ETag or first-write concurrency and operation
//! metadata, and service invocation. Publishing is left to the transactional outbox.
//!
//! Every call takes the `traceparent` of the request or delivery being served, so herd's spans
//! for the call join that trace, and has a timeout. Connections are pooled (hyper-util's
//! client).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// How long a state call may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an invocation may take.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sets both limits above instead (ms): a test that races hundreds of orders on a busy machine
/// waits longer.
const TIMEOUT_VAR: &str = "SHOP_SIDECAR_TIMEOUT_MS";

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 409: an ETag did not match, or a create-only write met an existing key.
    Conflict,
    /// Another non-2xx answer, with its body.
    Status(StatusCode, String),
    /// No answer: connection refused or broken.
    Transport(String),
    /// No answer in time.
    Timeout,
    /// An answer that is not what the API returns.
    Decode(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Conflict => write!(f, "conflict (ETag or first-write)"),
            Error::Status(s, body) => write!(f, "sidecar answered {s}: {body}"),
            Error::Transport(e) => write!(f, "sidecar unreachable: {e}"),
            Error::Timeout => write!(f, "sidecar timed out"),
            Error::Decode(e) => write!(f, "unreadable sidecar answer: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// A stored value and its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its ETag, for a conditional write.
    pub etag: String,
}

/// One write of a save or a transaction: an upsert or a delete, with its conditions and
/// metadata.
#[derive(Debug, Clone)]
pub struct Write {
    operation: &'static str,
    key: String,
    value: Option<Value>,
    etag: Option<String>,
    first_write: bool,
    metadata: Map<String, Value>,
}

impl Write {
    /// Upsert `key` with `value`, unconditionally unless a condition is added.
    pub fn upsert(key: impl Into<String>, value: &impl Serialize) -> Self {
        Write {
            operation: "upsert",
            key: key.into(),
            value: Some(serde_json::to_value(value).expect("shop values serialise")),
            etag: None,
            first_write: false,
            metadata: Map::new(),
        }
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Write {
            operation: "delete",
            key: key.into(),
            value: None,
            etag: None,
            first_write: false,
            metadata: Map::new(),
        }
    }

    /// Only if the key still has `etag`.
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// Only if the key does not exist yet (first-write concurrency without an ETag).
    pub fn create_only(mut self) -> Self {
        self.first_write = true;
        self
    }

    /// Only if the key is as it was read: still `etag`, or still missing when `None`.
    pub fn unchanged_since(self, etag: Option<&str>) -> Self {
        match etag {
            Some(e) => self.etag(e),
            None => self.create_only(),
        }
    }

    /// Operation metadata, e.g. `type` (the outbox event's CloudEvent type).
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The item of a save request, which is also the `request` of a transaction operation.
    fn item(&self) -> Value {
        let mut item = Map::new();
        item.insert("key".into(), self.key.clone().into());
        if let Some(v) = &self.value {
            item.insert("value".into(), v.clone());
        }
        if let Some(e) = &self.etag {
            item.insert("etag".into(), e.clone().into());
        }
        if self.first_write {
            item.insert("options".into(), json!({"concurrency": "first-write"}));
        }
        if !self.metadata.is_empty() {
            item.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(item)
    }
}

/// The milliseconds in environment variable `name`, when it is set to a number.
pub fn ms_from_env(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// A client of the sidecar API.
#[derive(Clone)]
pub struct Sidecar {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    state_timeout: Duration,
    invoke_timeout: Duration,
}

impl Sidecar {
    /// The sidecar on `DAPR_HTTP_PORT` (default 3500, as Dapr's).
    pub fn from_env() -> Self {
        let port = std::env::var("DAPR_HTTP_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3500u16);
        Self::new(port)
    }

    /// The sidecar on `127.0.0.1:port`.
    pub fn new(port: u16) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        let limit = ms_from_env(TIMEOUT_VAR);
        Sidecar {
            base: format!("http://127.0.0.1:{port}"),
            client,
            state_timeout: limit.unwrap_or(STATE_TIMEOUT),
            invoke_timeout: limit.unwrap_or(INVOKE_TIMEOUT),
        }
    }

    /// One request; the status and body of any answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        traceparent: Option<&str>,
        timeout: Duration,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Error> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(tp) = traceparent.and_then(|tp| HeaderValue::from_str(tp).ok()) {
            request = request.header("traceparent", tp);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Transport(e.to_string()))?;
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Error::Transport(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Error::Transport(e.to_string()))?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// A state call that answers 2xx or fails.
    async fn state(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        traceparent: Option<&str>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Error> {
        let (status, headers, body) = self
            .call(method, path, body, traceparent, self.state_timeout)
            .await?;
        match status {
            s if s.is_success() => Ok((s, headers, body)),
            StatusCode::CONFLICT => Err(Error::Conflict),
            s => Err(Error::Status(
                s,
                String::from_utf8_lossy(&body).into_owned(),
            )),
        }
    }

    /// `key` of `store` with its ETag, `None` when missing.
    pub async fn get<T: DeserializeOwned>(
        &self,
        store: &str,
        key: &str,
        traceparent: Option<&str>,
    ) -> Result<Option<Versioned<T>>, Error> {
        let path = format!("/v1.0/state/{store}/{key}");
        let (status, headers, body) = self.state(Method::GET, &path, None, traceparent).await?;
        if status == StatusCode::NO_CONTENT || body.is_empty() {
            return Ok(None);
        }
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Decode(format!("no ETag with {key}")))?
            .to_string();
        let value =
            serde_json::from_slice(&body).map_err(|e| Error::Decode(format!("{key}: {e}")))?;
        Ok(Some(Versioned { value, etag }))
    }

    /// Several keys of `store` at once, in the order asked for; `None` for a missing key.
    pub async fn bulk_get<T: DeserializeOwned>(
        &self,
        store: &str,
        keys: &[String],
        traceparent: Option<&str>,
    ) -> Result<Vec<Option<Versioned<T>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            key: String,
            data: Option<Value>,
            etag: Option<String>,
        }
        let path = format!("/v1.0/state/{store}/bulk");
        let body = serde_json::to_vec(&json!({ "keys": keys })).expect("keys serialise");
        let (_, _, body) = self
            .state(Method::POST, &path, Some(body), traceparent)
            .await?;
        let entries: Vec<Entry> =
            serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))?;
        let mut found: std::collections::HashMap<String, Versioned<T>> = Default::default();
        for e in entries {
            if let (Some(data), Some(etag)) = (e.data, e.etag) {
                let value = serde_json::from_value(data)
                    .map_err(|err| Error::Decode(format!("{}: {err}", e.key)))?;
                found.insert(e.key, Versioned { value, etag });
            }
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    /// Saves `writes` (upserts only), all or none.
    pub async fn save(
        &self,
        store: &str,
        writes: &[Write],
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        let items: Vec<Value> = writes.iter().map(Write::item).collect();
        let body = serde_json::to_vec(&items).expect("items serialise");
        let path = format!("/v1.0/state/{store}");
        self.state(Method::POST, &path, Some(body), traceparent)
            .await
            .map(drop)
    }

    /// Runs `writes` as one transaction, all or nothing (on a store with an outbox, every
    /// upsert is also published, with its metadata as the event's attributes).
    pub async fn transact(
        &self,
        store: &str,
        writes: &[Write],
        traceparent: Option<&str>,
    ) -> Result<(), Error> {
        let operations: Vec<Value> = writes
            .iter()
            .map(|w| json!({ "operation": w.operation, "request": w.item() }))
            .collect();
        let body = serde_json::to_vec(&json!({ "operations": operations })).expect("serialise");
        let path = format!("/v1.0/state/{store}/transaction");
        self.state(Method::POST, &path, Some(body), traceparent)
            .await
            .map(drop)
    }

    /// `POST`s `body` as JSON to `path` of app `app`; its status and body, whatever the status.
    pub async fn invoke(
        &self,
        app: &str,
        path: &str,
        body: &impl Serialize,
        traceparent: Option<&str>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let path = format!("/v1.0/invoke/{app}/method/{}", path.trim_start_matches('/'));
        let body = serde_json::to_vec(body).expect("request serialises");
        let (status, _, body) = self
            .call(
                Method::POST,
                &path,
                Some(body),
                traceparent,
                self.invoke_timeout,
            )
            .await?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_carry_their_conditions_and_metadata() {
        let w = Write::upsert("k", &json!({"a": 1}))
            .unchanged_since(None)
            .meta("type", "order.created");
        assert_eq!(
            w.item(),
            json!({"key": "k", "value": {"a": 1}, "options": {"concurrency": "first-write"},
                "metadata": {"type": "order.created"}})
        );
        let w = Write::upsert("k", &1).unchanged_since(Some("7"));
        assert_eq!(w.item(), json!({"key": "k", "value": 1, "etag": "7"}));
        assert_eq!(Write::delete("k").item(), json!({"key": "k"}));
    }
}
