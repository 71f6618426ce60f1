//! Dapr's gRPC API from a plain tonic client: state round trips on the shared gRPC listener,
//! and bad input answered with clear statuses while herd stays up (a missing or wrong token,
//! unknown methods and services, a malformed message, one over `[api] max_body`).

use std::time::Duration;

use dapr::dapr::proto::common::v1::StateItem;
use dapr::dapr::proto::runtime::v1 as pb;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::state::run_id;
use crate::util::{Herd, free_port};

/// A `GetStateRequest` whose field 1 has the wrong wire type.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "1")]
    store_name: u64,
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("dapr-api-token", token.parse().unwrap());
    r
}

fn save(key: &str, value: Vec<u8>) -> pb::SaveStateRequest {
    pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![StateItem {
            key: key.into(),
            value,
            ..Default::default()
        }],
    }
}

fn get(key: &str) -> pb::GetStateRequest {
    pb::GetStateRequest {
        store_name: "statestore".into(),
        key: key.into(),
        ..Default::default()
    }
}

#[test]
fn grpc_api_answers_bad_input_with_clear_statuses_and_stays_up() {
    let run = run_id();
    let token = format!("token-{run}");
    let grpc_port = free_port();
    let mut herd = Herd::prepare(&format!(
        "[api]\nlisten = \"127.0.0.1:{}\"\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\napp_id = \"g{run}\"\nmax_body = \"16KB\"\n",
        free_port()
    ));
    herd.env.push(("HERD_API_TOKEN".into(), token.clone()));
    herd.spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("http://127.0.0.1:{grpc_port}");
        let channel = connect(&url).await;
        let mut client = DaprClient::new(channel.clone());

        // A round trip with the token.
        client
            .save_state(with_token(save("k", b"v1".to_vec()), &token))
            .await
            .unwrap();
        let got = client
            .get_state(with_token(get("k"), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.data, b"v1");
        assert!(!got.etag.is_empty());

        // No token, or a wrong one.
        let e = client.get_state(get("k")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = client
            .get_state(with_token(get("k"), "wrong"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

        // A method herd does not serve, named in the answer; an unknown service.
        let e = client
            .get_secret(with_token(pb::GetSecretRequest::default(), &token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e.message().contains("GetSecret"), "{e:?}");
        let mut raw = tonic::client::Grpc::new(channel.clone());
        raw.ready().await.unwrap();
        let e = raw
            .unary::<_, pb::GetStateResponse, _>(
                with_token(get("k"), &token),
                tonic::codegen::http::uri::PathAndQuery::from_static("/no.such.Service/Get"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");

        // A message that does not decode.
        raw.ready().await.unwrap();
        let e = raw
            .unary::<_, pb::GetStateResponse, _>(
                with_token(Malformed { store_name: 7 }, &token),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/dapr.proto.runtime.v1.Dapr/GetState",
                ),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        assert!(e.message().contains("decode"), "{e:?}");

        // Over the body limit: refused, nothing written.
        let e = client
            .save_state(with_token(save("big", vec![b'x'; 20 * 1024]), &token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let got = client
            .get_state(with_token(get("big"), &token))
            .await
            .unwrap()
            .into_inner();
        assert!(got.data.is_empty());

        // Bad requests: the code Dapr gives them.
        let e = client
            .get_state(with_token(
                pb::GetStateRequest {
                    store_name: "nope".into(),
                    key: "k".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = client
            .save_state(with_token(save("", b"v".to_vec()), &token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Still up, on the same connection.
        let got = client
            .get_state(with_token(get("k"), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.data, b"v1");
    });
    assert!(
        herd.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "herd exited"
    );
}

/// Connects to `url`, polling until herd listens (20 s at most).
async fn connect(url: &str) -> Channel {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no gRPC listener at {url}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every gRPC call runs in a SERVER span, a child of the caller's `traceparent` (or of its
/// binary `grpc-trace-bin`), and the publish it makes is that span's child.
#[test]
fn grpc_calls_run_in_server_spans_that_continue_the_callers_trace() {
    use crate::tracing::Collector;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    let collector = Collector::start();
    let grpc_port = free_port();
    let mut herd = Herd::prepare(&format!(
        "[telemetry]\notlp_endpoint = \"http://{}\"\n\n[api]\nlisten = \"127.0.0.1:{}\"\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n",
        collector.addr,
        free_port()
    ));
    herd.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    herd.spawn();
    let w3c_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let bin_trace = "0102030405060708090a0b0c0d0e0f10";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = connect(&format!("http://127.0.0.1:{grpc_port}")).await;
        let mut client = DaprClient::new(channel);
        let mut r = tonic::Request::new(get("k"));
        r.metadata_mut().insert(
            "traceparent",
            format!("00-{w3c_trace}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        client.get_state(r).await.unwrap();
        // grpc-trace-bin: version 0, trace id, span id, sampled.
        let mut bin = vec![0u8, 0];
        bin.extend((1..=16u8).collect::<Vec<_>>());
        bin.push(1);
        bin.extend([0xab; 8]);
        bin.extend([2, 1]);
        let mut r = tonic::Request::new(pb::PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: format!("traced-{}", run_id()),
            data: b"{}".to_vec(),
            data_content_type: "application/json".into(),
            ..Default::default()
        });
        r.metadata_mut().insert_bin(
            "grpc-trace-bin",
            tonic::metadata::MetadataValue::from_bytes(&bin),
        );
        client.publish_event(r).await.unwrap();
    });
    let spans = crate::util::wait_for("the gRPC spans", Duration::from_secs(20), || {
        let spans = collector.spans();
        let server = |trace: &str, name: &str| {
            spans
                .iter()
                .find(|s| {
                    s.trace_id() == trace && s.kind() == SpanKind::Server && s.span.name == name
                })
                .cloned()
        };
        let get = server(w3c_trace, "dapr.proto.runtime.v1.Dapr/GetState")?;
        let publish = server(bin_trace, "dapr.proto.runtime.v1.Dapr/PublishEvent")?;
        let producer = spans
            .iter()
            .find(|s| s.trace_id() == bin_trace && s.kind() == SpanKind::Producer)?
            .clone();
        Some((get, publish, producer))
    });
    let (get, publish, producer) = spans;
    assert_eq!(get.parent_id(), "00f067aa0ba902b7");
    assert_eq!(get.attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(get.attribute("rpc.method").as_deref(), Some("GetState"));
    assert_eq!(publish.parent_id(), "abababababababab");
    assert_eq!(producer.parent_id(), publish.span_id());
    drop(herd);
}
