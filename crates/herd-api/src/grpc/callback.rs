//! herd as the client of an app's `AppCallback` service (`app_protocol = "grpc"`): the
//! subscriptions it lists (`ListTopicSubscriptions`), deliveries (`OnTopicEvent`) and
//! invocations (`OnInvoke`), as daprd makes them for a gRPC app. One h2c channel per instance
//! address, made on first use and forgotten when a call on it fails to connect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long connecting to an app instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to the instances of gRPC apps, by address.
#[derive(Default)]
pub struct Channels {
    open: Mutex<HashMap<SocketAddr, Channel>>,
}

/// Why a call got no answer from the app.
#[derive(Debug)]
pub enum CallError {
    /// Connecting failed: the instance never saw the call.
    Connect(String),
    /// The app answered with an error status (or the call broke).
    Status(Status),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect failed: {e}"),
            CallError::Status(s) => write!(f, "{}: {}", s.code(), s.message()),
        }
    }
}

impl Channels {
    /// A client for the instance at `addr`, connecting if there is no channel yet.
    async fn client(&self, addr: SocketAddr) -> Result<AppCallbackClient<Channel>, CallError> {
        let open = self
            .open
            .lock()
            .expect("channels poisoned")
            .get(&addr)
            .cloned();
        let channel = match open {
            Some(c) => c,
            None => {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| CallError::Connect(e.to_string()))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| CallError::Connect(e.to_string()))?;
                self.open
                    .lock()
                    .expect("channels poisoned")
                    .insert(addr, channel.clone());
                channel
            }
        };
        Ok(AppCallbackClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Forgets the channel to `addr` after a transport failure, so the next call reconnects.
    fn forget(&self, addr: SocketAddr, status: &Status) {
        if status.code() == Code::Unavailable {
            self.open.lock().expect("channels poisoned").remove(&addr);
        }
    }

    /// `ListTopicSubscriptions`: the app's programmatic subscriptions (none if it does not
    /// implement the method).
    pub(crate) async fn subscriptions(
        &self,
        addr: SocketAddr,
    ) -> Result<Vec<pb::TopicSubscription>, CallError> {
        let mut client = self.client(addr).await?;
        match client.list_topic_subscriptions(()).await {
            Ok(r) => Ok(r.into_inner().subscriptions),
            Err(s) if s.code() == Code::Unimplemented => Ok(Vec::new()),
            Err(s) => {
                self.forget(addr, &s);
                Err(CallError::Status(s))
            }
        }
    }

    /// `OnTopicEvent`: the app's status for the event (`SUCCESS`, `RETRY`, `DROP`).
    pub(crate) async fn topic_event(
        &self,
        addr: SocketAddr,
        event: pb::TopicEventRequest,
        traceparent: Option<&str>,
    ) -> Result<i32, CallError> {
        let mut client = self.client(addr).await?;
        let mut request = tonic::Request::new(event);
        with_traceparent(&mut request, traceparent);
        match client.on_topic_event(request).await {
            Ok(r) => Ok(r.into_inner().status),
            Err(s) => {
                self.forget(addr, &s);
                Err(CallError::Status(s))
            }
        }
    }

    /// `OnInvoke`: the app's answer to an invocation, as an HTTP status, content type and body.
    pub(crate) async fn invoke(
        &self,
        addr: SocketAddr,
        call: Invocation<'_>,
    ) -> Result<(StatusCode, String, Bytes), CallError> {
        let mut client = self.client(addr).await?;
        let (path, query) = call
            .path_and_query
            .split_once('?')
            .unwrap_or((call.path_and_query, ""));
        let mut request = tonic::Request::new(common::InvokeRequest {
            method: path.trim_start_matches('/').to_string(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: call.body.to_vec(),
            }),
            content_type: call.content_type.to_string(),
            http_extension: Some(common::HttpExtension {
                verb: verb(call.method),
                querystring: query.to_string(),
            }),
        });
        with_traceparent(&mut request, call.traceparent);
        for (key, value) in [
            ("dapr-caller-app-id", call.caller),
            ("dapr-callee-app-id", call.callee),
        ] {
            if let Ok(v) = value.parse() {
                request.metadata_mut().insert(key, v);
            }
        }
        match client.on_invoke(request).await {
            Ok(r) => {
                let r = r.into_inner();
                let body = r.data.map(|a| Bytes::from(a.value)).unwrap_or_default();
                Ok((StatusCode::OK, r.content_type, body))
            }
            Err(s) if s.code() == Code::Unavailable => {
                self.forget(addr, &s);
                Err(CallError::Status(s))
            }
            // The app's own error: an answer, with the status daprd gives it.
            Err(s) => Ok((
                http_status(s.code()),
                "text/plain".to_string(),
                Bytes::from(s.message().to_string()),
            )),
        }
    }
}

/// One invocation of a gRPC app.
pub(crate) struct Invocation<'a> {
    /// The HTTP method the caller used.
    pub(crate) method: &'a http::Method,
    /// The method path and query, starting with `/`.
    pub(crate) path_and_query: &'a str,
    /// The request's content type.
    pub(crate) content_type: &'a str,
    /// The request body.
    pub(crate) body: &'a Bytes,
    /// The caller's and callee's app ids.
    pub(crate) caller: &'a str,
    /// The app invoked.
    pub(crate) callee: &'a str,
    /// The trace context to pass on.
    pub(crate) traceparent: Option<&'a str>,
}

fn with_traceparent<T>(request: &mut tonic::Request<T>, traceparent: Option<&str>) {
    if let Some(v) = traceparent.and_then(|tp| tp.parse().ok()) {
        request.metadata_mut().insert("traceparent", v);
    }
}

/// `HTTPExtension.Verb` of an HTTP method.
fn verb(method: &http::Method) -> i32 {
    match *method {
        http::Method::GET => 1,
        http::Method::HEAD => 2,
        http::Method::POST => 3,
        http::Method::PUT => 4,
        http::Method::DELETE => 5,
        http::Method::CONNECT => 6,
        http::Method::OPTIONS => 7,
        http::Method::TRACE => 8,
        http::Method::PATCH => 9,
        _ => 0,
    }
}

/// The HTTP status for an app's gRPC error, as daprd maps it.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `OnTopicEvent` request for a CloudEvent (`event`, as delivered in `body`): its data as
/// bytes (a JSON value serialised, a string's characters for a non-JSON content type,
/// `data_base64` decoded), the attributes in their fields, `topic` the subscription's, `path` the
/// route.
pub(crate) fn topic_event(
    event: &serde_json::Value,
    body: &[u8],
    pubsub: &str,
    topic: &str,
    path: &str,
) -> pb::TopicEventRequest {
    let text = |k: &str| {
        event
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let content_type = text("datacontenttype");
    let data = match (event.get("data"), event.get("data_base64")) {
        (Some(serde_json::Value::String(s)), _) if !content_type.contains("json") => {
            s.clone().into_bytes()
        }
        (Some(v), _) => v.to_string().into_bytes(),
        (None, Some(serde_json::Value::String(b))) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default()
        }
        // Not a CloudEvent (a raw payload): the bytes as published.
        _ if event.get("specversion").is_none() => body.to_vec(),
        _ => Vec::new(),
    };
    pb::TopicEventRequest {
        id: text("id"),
        source: text("source"),
        r#type: text("type"),
        spec_version: text("specversion"),
        data_content_type: content_type,
        data,
        topic: topic.to_string(),
        pubsub_name: pubsub.to_string(),
        path: path.to_string(),
        extensions: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudevents_become_topic_event_requests() {
        let event = serde_json::json!({
            "specversion": "1.0", "id": "1", "source": "app", "type": "t",
            "datacontenttype": "application/json", "data": {"a": 1}, "topic": "orders",
        });
        let r = topic_event(&event, b"", "pubsub", "orders", "/orders");
        assert_eq!(r.data, br#"{"a":1}"#);
        assert_eq!((r.id.as_str(), r.topic.as_str()), ("1", "orders"));
        let text = serde_json::json!({
            "specversion": "1.0", "datacontenttype": "text/plain", "data": "hi",
        });
        assert_eq!(topic_event(&text, b"", "p", "t", "/").data, b"hi");
        let raw = topic_event(&serde_json::json!(null), b"raw bytes", "p", "t", "/");
        assert_eq!(raw.data, b"raw bytes");
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
    }
}
