//! Bad input on the sidecar API: names, keys and metadata past their limits, an oversized
//! body, an invalid app id to invoke, and heads HTTP says to refuse. Every answer is a 4xx (or
//! 501) with Dapr's `{errorCode, message}`, and nothing is stored.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::json;

use crate::state::{Api, call_at};
use crate::util::Response;

/// Asserts `r` is a Dapr error with `status` and `code`.
fn dapr_error(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: {}",
        r.body
    );
    let body = r.json();
    assert_eq!(body["errorCode"], code, "{what}: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty() && m.len() < 300),
        "{what}: a short message: {body}"
    );
}

fn start() -> Api {
    Api::start_with("limits", "max_body = \"200KB\"", "", |_| {})
}

#[test]
fn oversized_names_keys_and_metadata_are_400_and_nothing_is_stored() {
    let api = start();
    let (call, malformed) = (
        |m: &str, p: &str, b: &str| api.call(m, p, b),
        "ERR_MALFORMED_REQUEST",
    );
    let huge_key = "k".repeat(100_000);
    // All or none: the valid item beside the oversized one is not written either.
    let body = json!([{"key": "fine", "value": 1}, {"key": huge_key, "value": 2}]).to_string();
    dapr_error(
        &call("POST", "/v1.0/state/statestore", &body),
        400,
        malformed,
        "100 KB key",
    );
    assert_eq!(call("GET", "/v1.0/state/statestore/fine", "").status, 204);
    let at_limit = "k".repeat(1024);
    let body = json!([{"key": at_limit, "value": 3}]).to_string();
    assert_eq!(call("POST", "/v1.0/state/statestore", &body).status, 204);
    let r = call("GET", &format!("/v1.0/state/statestore/{at_limit}"), "");
    assert_eq!((r.status, r.body.as_str()), (200, "3"));

    let long = "k".repeat(1025);
    for (method, path, body, what) in [
        (
            "GET",
            format!("/v1.0/state/statestore/{long}"),
            String::new(),
            "key in the path",
        ),
        (
            "DELETE",
            format!("/v1.0/state/statestore/{long}"),
            String::new(),
            "key to delete",
        ),
        (
            "POST",
            "/v1.0/state/statestore/bulk".into(),
            json!({"keys": [long]}).to_string(),
            "bulk key",
        ),
        (
            "POST",
            "/v1.0/state/statestore/transaction".into(),
            json!({"operations": [{"operation": "upsert", "request": {"key": long, "value": 1}}]})
                .to_string(),
            "transaction key",
        ),
        (
            "POST",
            "/v1.0-alpha1/lock/statestore".into(),
            json!({"resourceId": long, "lockOwner": "o", "expiryInSeconds": 5}).to_string(),
            "lock resource",
        ),
        (
            "GET",
            format!("/v1.0/state/{}/k", "s".repeat(129)),
            String::new(),
            "store name",
        ),
        (
            "POST",
            format!("/v1.0/publish/{}/t", "p".repeat(129)),
            "{}".into(),
            "pubsub name",
        ),
        (
            "POST",
            format!("/v1.0/publish/pubsub/{}", "t".repeat(256)),
            "{}".into(),
            "topic",
        ),
        (
            "POST",
            format!("/v1.0/publish/pubsub/t?metadata.big={}", "v".repeat(4097)),
            "{}".into(),
            "metadata value",
        ),
        (
            "POST",
            format!(
                "/v1.0/publish/pubsub/t?{}",
                (0..65)
                    .map(|i| format!("metadata.m{i}=v"))
                    .collect::<Vec<_>>()
                    .join("&")
            ),
            "{}".into(),
            "metadata entries",
        ),
        (
            "POST",
            "/v1.0/state/statestore".into(),
            json!([{"key": "m", "value": 1, "metadata": {"x": "v".repeat(4097)}}]).to_string(),
            "item metadata",
        ),
        (
            "POST",
            "/v1.0-alpha1/publish/bulk/pubsub/t".into(),
            json!([{"entryId": "1", "event": {}, "contentType": "application/json",
                     "metadata": {"n".repeat(257): "v"}}])
            .to_string(),
            "bulk entry metadata name",
        ),
    ] {
        dapr_error(&call(method, &path, &body), 400, malformed, what);
    }
    assert_eq!(call("GET", "/v1.0/state/statestore/m", "").status, 204);
    // Within the limits the same calls work.
    assert_eq!(
        call(
            "POST",
            "/v1.0/publish/pubsub/t?metadata.ttlInSeconds=60",
            "{}"
        )
        .status,
        204
    );
}

#[test]
fn an_oversized_body_is_413_in_dapr_json() {
    let api = start();
    let big = json!([{"key": "big", "value": "x".repeat(300_000)}]).to_string();
    let r = api.call("POST", "/v1.0/state/statestore", &big);
    dapr_error(&r, 413, "ERR_BODY_TOO_LARGE", "declared length");
    assert_eq!(
        api.call("GET", "/v1.0/state/statestore/big", "").status,
        204
    );
    // A chunked body is counted as it streams in.
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = "y".repeat(0x8000);
    let head = "POST /v1.0/publish/pubsub/t HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut bytes = head.as_bytes().to_vec();
    for _ in 0..8 {
        bytes.extend_from_slice(format!("8000\r\n{chunk}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("\"errorCode\":\"ERR_BODY_TOO_LARGE\""),
        "{text}"
    );
}

#[test]
fn an_invalid_app_id_to_invoke_is_400() {
    let api = start();
    for path in [
        "/v1.0/invoke/%2e%2e%2fx/method/a",
        "/v1.0/invoke/a%20b/method/a",
        &format!("/v1.0/invoke/{}/method/a", "a".repeat(65)),
    ] {
        dapr_error(&api.call("GET", path, ""), 400, "ERR_DIRECT_INVOKE", path);
    }
    let r = call_at(api.addr, "GET", "/any", &[("dapr-app-id", "../x")], "");
    dapr_error(&r, 400, "ERR_DIRECT_INVOKE", "dapr-app-id header");
    // A well-formed id of no app stays what Dapr answers: 500 ERR_DIRECT_INVOKE.
    let r = api.call("GET", "/v1.0/invoke/nobody/method/a", "");
    dapr_error(&r, 500, "ERR_DIRECT_INVOKE", "unknown app");
}

/// Sends `bytes` to `addr` on a new connection; returns the answer up to the close.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the connection is closed after a refused head");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn heads_http_says_to_refuse_get_dapr_errors_on_the_api_listener() {
    let api = start();
    let after = "GET /v1.0/healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    for (head, status, code) in [
        (
            "GET /v1.0/metadata HTTP/1.1\r\n\r\n",
            400,
            "ERR_BAD_REQUEST",
        ),
        (
            "GET /v1.0/metadata HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "ERR_BAD_REQUEST",
        ),
        (
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            405,
            "ERR_BAD_REQUEST",
        ),
        (
            "POST /v1.0/publish/pubsub/t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            501,
            "ERR_API_UNIMPLEMENTED",
        ),
    ] {
        let answer = exchange(api.addr, format!("{head}{after}").as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{head:?}: {answer}"
        );
        assert!(
            answer.contains(&format!("\"errorCode\":\"{code}\"")),
            "{answer}"
        );
        assert_eq!(answer.matches("\nHTTP/1.1 ").count(), 0, "{answer}");
    }
}
