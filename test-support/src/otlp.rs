//! An in-process OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/metrics` with protobuf
//! bodies (the OTLP/HTTP binary encoding, opentelemetry.io/docs/specs/otlp), decoded with the
//! `opentelemetry-proto` messages, kept for assertions. Bodies are kept as received and decoded
//! when read ([`OtlpReceiver::spans`], [`OtlpReceiver::points`]): receiving costs next to no
//! CPU, so a benchmark that shares the machine with the receiver measures the exporter, not the
//! collector. Point a process at it with
//! `OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}` or `ade-backup local --otlp-endpoint {endpoint}`.
//! [`OtlpReceiver::start_grpc`] is the same receiver over OTLP/gRPC (tonic's server with the
//! collector service definitions), for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One received span, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub trace_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub service: String,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One received metric data point: the metric's name, the point's attributes and its value
/// (a sum's value, or a histogram's count).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
struct Received {
    traces: Vec<Bytes>,
    metrics: Vec<Bytes>,
    requests: u64,
}

/// The running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:{port}` (the OTLP base URL).
    pub endpoint: String,
    received: Arc<Mutex<Received>>,
    _stop: oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            received,
            _stop: stop,
        }
    }

    /// Starts an OTLP/gRPC receiver (the collector's `TraceService` and `MetricsService` over
    /// tonic, HTTP/2 without TLS) on an ephemeral loopback port; `endpoint` is its
    /// `http://127.0.0.1:{port}`, for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`. What it receives is
    /// read back as from the HTTP receiver.
    pub async fn start_grpc() -> Self {
        use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let received = Arc::new(Mutex::new(Received::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP/gRPC receiver");
        let addr = listener.local_addr().expect("local addr");
        let incoming = tokio_stream_of(listener);
        let (stop, stopped) = oneshot::channel::<()>();
        let service = GrpcCollector(received.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            received,
            _stop: stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let bodies = self.lock().traces.clone();
        bodies.into_iter().flat_map(decode_spans).collect()
    }

    /// Every metric data point received so far, in arrival order.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        let bodies = self.lock().metrics.clone();
        bodies.into_iter().flat_map(decode_points).collect()
    }

    /// Export requests received (traces and metrics).
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }
}

fn text(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn protobuf(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        body,
    )
        .into_response()
}

async fn traces(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> Response {
    let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
    r.traces.push(body);
    r.requests += 1;
    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn metrics(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> Response {
    let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
    r.metrics.push(body);
    r.requests += 1;
    protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
}

/// The spans of one export request (none if it does not decode: the tests then miss them).
fn decode_spans(body: Bytes) -> Vec<ReceivedSpan> {
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otlp receiver: undecodable traces request: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex::encode(&s.trace_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    span_id: hex::encode(&s.span_id),
                    name: s.name,
                    kind: s.kind,
                    status: s.status.map_or(0, |st| st.code),
                    service: service.clone(),
                    attributes: text(&s.attributes),
                });
            }
        }
    }
    out
}

/// The data points of one export request (none if it does not decode).
fn decode_points(body: Bytes) -> Vec<ReceivedPoint> {
    let req = match ExportMetricsServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otlp receiver: undecodable metrics request: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for rm in req.resource_metrics {
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let point = |attributes: &[KeyValue], value: f64| ReceivedPoint {
                    metric: m.name.clone(),
                    attributes: text(attributes),
                    value,
                };
                match &m.data {
                    Some(metric::Data::Sum(s)) => out.extend(s.data_points.iter().map(|p| {
                        let v = match p.value {
                            Some(number_data_point::Value::AsDouble(d)) => d,
                            Some(number_data_point::Value::AsInt(i)) => i as f64,
                            None => 0.0,
                        };
                        point(&p.attributes, v)
                    })),
                    Some(metric::Data::Histogram(h)) => out.extend(
                        h.data_points
                            .iter()
                            .map(|p| point(&p.attributes, p.count as f64)),
                    ),
                    _ => {}
                }
            }
        }
    }
    out
}

/// The gRPC collector services: each request is kept encoded, as the HTTP receiver keeps bodies.
#[derive(Clone)]
struct GrpcCollector(Arc<Mutex<Received>>);

impl GrpcCollector {
    fn keep(&self, body: Vec<u8>, traces: bool) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        r.requests += 1;
        if traces {
            r.traces.push(Bytes::from(body));
        } else {
            r.metrics.push(Bytes::from(body));
        }
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for GrpcCollector
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner().encode_to_vec(), true);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService
    for GrpcCollector
{
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.keep(request.into_inner().encode_to_vec(), false);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The accepted connections of `listener`, as the stream tonic's server takes.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}
