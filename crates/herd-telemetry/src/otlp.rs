//! Span export over OTLP/HTTP (protobuf), when an endpoint is configured.
//!
//! The endpoint is `[telemetry] otlp_endpoint` (the collector's base URL; herd posts to
//! `<endpoint>/v1/traces`), else the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it
//! is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL). Without any, nothing is installed and
//! [`tracer`] answers `None`: span code elsewhere checks that once and does nothing more. The
//! service name is `OTEL_SERVICE_NAME`, else `[telemetry] service_name`, else `herd`.
//!
//! Ended spans go to the SDK's batch processor: a bounded queue (2048 spans, `OTEL_BSP_*`
//! variables apply) drained by a thread of its own every few seconds or when a batch is full;
//! a span ended while the queue is full is dropped, so a slow or absent collector never holds
//! a request up. The exporter posts with [`RuntimeClient`], which runs hyper's client on herd's
//! tokio runtime rather than bringing an HTTP stack of its own. [`Exporting::shutdown`] flushes
//! what is queued.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The tracer spans are started with, once export is installed.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer, when spans are exported; `None` (one atomic load) otherwise.
#[inline]
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Where and as what spans are exported, from `[telemetry]`.
#[derive(Debug, Clone, Default)]
pub struct OtlpSettings {
    /// The collector's base URL (`http://127.0.0.1:4318`).
    pub endpoint: Option<String>,
    /// The `service.name` of herd's spans.
    pub service_name: Option<String>,
}

/// Installed export; flush it with [`Exporting::shutdown`] before the runtime goes away.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Exporting {
    /// Exports what is queued and stops the export thread. Blocks: call it outside the
    /// runtime's tasks, while the runtime still runs (the exporter's requests run on it).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!("flushing spans on shutdown: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The URL spans are posted to, if export is configured.
fn traces_url(settings: &OtlpSettings) -> Option<String> {
    let base = |url: &str| format!("{}/v1/traces", url.trim_end_matches('/'));
    settings
        .endpoint
        .as_deref()
        .map(base)
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|u| base(&u)))
}

/// Installs span export when `settings` or the environment name an endpoint; the exporter's
/// requests run on `runtime`. `Ok(None)`: nothing configured, spans stay off.
pub fn install(
    settings: &OtlpSettings,
    runtime: tokio::runtime::Handle,
) -> Result<Option<Exporting>, String> {
    let Some(url) = traces_url(settings) else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(RuntimeClient::new(runtime))
        .build()
        .map_err(|e| format!("OTLP exporter for {url}: {e}"))?;
    let name = env("OTEL_SERVICE_NAME")
        .or_else(|| settings.service_name.clone())
        .unwrap_or_else(|| "herd".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "herd");
    if TRACER.set(tracer).is_err() {
        return Err("span export is already installed".into());
    }
    tracing::info!("exporting spans to {url}");
    Ok(Some(Exporting { provider }))
}

/// How long one export may take, connecting included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's HTTP client: hyper's, on herd's tokio runtime. The batch processor calls it
/// from its own thread (outside the runtime), so each request is spawned onto the runtime and
/// its answer awaited from there.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    runtime: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RuntimeClient {
    /// A client whose requests run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { runtime, client }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            tokio::time::timeout(EXPORT_TIMEOUT, async move {
                let response = client.request(request.map(Full::new)).await?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            })
            .await
            .map_err(|_| HttpError::from("OTLP export timed out"))?
        });
        sent.await.map_err(|e| HttpError::from(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_endpoint_is_a_base_url() {
        let s = OtlpSettings {
            endpoint: Some("http://127.0.0.1:4318/".into()),
            service_name: None,
        };
        assert_eq!(
            traces_url(&s).as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
    }
}
