//! Response bodies are read bounded (`http::read_bounded`) everywhere: a body whose honest
//! `Content-Length` is over the cap is refused without being read, a streamed body without a
//! length is cut off at the cap, and a body at the cap still works — for ARM, blob downloads and
//! Service Bus error answers.
//!
//! Servers that never finish a body (a declared length never sent, a chunked stream that stalls)
//! are hand-written here because wiremock always sends whole bodies with an honest length: a
//! client that waits for the whole body hangs on them until its timeout, which is what these
//! tests rule out.

use ade_backup_shared::arm::storage::{BLOB_TOO_LARGE, MAX_BLOB_BYTES};
use ade_backup_shared::arm::{
    ArmClient, ArmClientOptions, ArmError, PacingPolicy, RetryPolicy, MAX_ARM_RESPONSE_BYTES,
    RESPONSE_TOO_LARGE,
};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::http::{read_bounded, BodyError};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::messaging::{
    MessageSender, MessagingError, OutboundMessage, ServiceBusSender, ServiceBusSenderOptions,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1";
const TEMPLATE: &str = "https://stg1.blob.core.windows.net/restore/azuredeploy.json";
/// Far more than any client here may wait for: a test that takes this long has hung on a body.
const PROMPT: Duration = Duration::from_secs(3);
/// The clients' own timeout: longer than [`PROMPT`], so a hang shows as a slow answer (or as a
/// timeout error) rather than as a quick one.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);

/// What the hand-written server answers to every request.
#[derive(Clone, Copy)]
enum Answer {
    /// Declares `Content-Length: declared`, sends none of it and keeps the connection open.
    DeclaredOnly { status: u16, declared: u64 },
    /// `Transfer-Encoding: chunked`, `total` bytes of spaces in 64 KiB chunks (per connection),
    /// then stalls without the final chunk.
    Stream { status: u16, total: usize },
}

impl Answer {
    fn declared(status: u16, declared: u64) -> Self {
        Self::DeclaredOnly { status, declared }
    }
    fn stream(status: u16, total: usize) -> Self {
        Self::Stream { status, total }
    }
}

/// A loopback server answering every request with `answer`; returns its base URL and the count
/// of body bytes it managed to hand to its sockets (all connections together).
async fn raw_server(answer: Answer) -> (Url, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_one(socket, answer, counter.clone()));
        }
    });
    let base = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    (base, sent)
}

async fn serve_one(mut socket: TcpStream, answer: Answer, sent: Arc<AtomicUsize>) {
    if read_request(&mut socket).await.is_none() {
        return;
    }
    match answer {
        Answer::DeclaredOnly { status, declared } => {
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
            );
            if socket.write_all(head.as_bytes()).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
        Answer::Stream { status, total } => {
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            let mut mine = 0;
            while mine < total {
                if socket.write_all(&framed).await.is_err() {
                    return;
                }
                mine += chunk.len();
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

/// Reads one request (head and any `Content-Length` body); `None` when the client went away.
async fn read_request(socket: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut byte).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        have += socket.read(&mut byte).await.ok().filter(|n| *n > 0)?;
    }
    Some(())
}

/// Runs `f`, which must fail, and fails the test if that takes longer than [`PROMPT`].
async fn fails_promptly<T: std::fmt::Debug, E>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> E {
    let started = Instant::now();
    let out = tokio::time::timeout(CLIENT_TIMEOUT * 2, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer at all"));
    assert!(
        started.elapsed() < PROMPT,
        "{what}: took {:?}, so the body was waited for",
        started.elapsed()
    );
    out.expect_err(what)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client")
}

fn arm_options() -> ArmClientOptions {
    ArmClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(1),
        },
        pacing: PacingPolicy::disabled(),
        request_timeout: CLIENT_TIMEOUT,
        ..ArmClientOptions::default()
    }
}

/// An ARM client for `base`, with blobs served under `{base}/_blob/`.
fn arm(base: &Url, options: ArmClientOptions) -> ArmClient {
    ArmClient::new(
        base.clone(),
        Arc::new(StaticToken(AccessToken::new("t"))),
        ArmClientOptions {
            blob_endpoint: Some(base.join("_blob/").expect("blob url")),
            ..options
        },
    )
    .expect("client")
}

fn vm() -> ResourceId {
    ResourceId::parse(VM).expect("vm id")
}

fn template() -> Url {
    Url::parse(TEMPLATE).expect("url")
}

/// A JSON object of exactly `len` bytes (padded with spaces, which JSON ignores).
fn json_of_len(value: &serde_json::Value, len: usize) -> Vec<u8> {
    let mut body = serde_json::to_vec(value).expect("json");
    assert!(body.len() <= len, "{len} is too small for the value");
    body.resize(len, b' ');
    body
}

async fn mock_answering(status: u16, body: Vec<u8>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    server
}

fn assert_too_large(e: &ArmError, code: &str, cap: usize) {
    match e {
        ArmError::Permanent {
            code: Some(c),
            message,
            ..
        } if c == code => assert!(
            message.contains(&format!("{cap}-byte limit")),
            "names the cap: {message}"
        ),
        other => panic!("expected a permanent {code}, got {other:?}"),
    }
}

// --- the reader itself ---------------------------------------------------------------------

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_without_reading() {
    let (base, _) = raw_server(Answer::declared(200, 5 << 30)).await;
    let resp = http_client().get(base).send().await.expect("response head");
    let err = fails_promptly("read_bounded", read_bounded(resp, 1024)).await;
    assert!(
        matches!(err, BodyError::TooLarge { cap: 1024, declared: Some(n) } if n == 5 << 30),
        "{err:?}"
    );
    assert!(err.to_string().contains("1024-byte limit"), "{err}");
}

#[tokio::test]
async fn a_stream_without_a_length_is_cut_off_at_the_cap() {
    let total = 64 << 20;
    let (base, sent) = raw_server(Answer::stream(200, total)).await;
    let resp = http_client().get(base).send().await.expect("response head");
    assert_eq!(resp.content_length(), None, "chunked: no length to check");
    let err = fails_promptly("read_bounded", read_bounded(resp, 1 << 20)).await;
    assert!(
        matches!(
            err,
            BodyError::TooLarge {
                cap: 1048576,
                declared: None
            }
        ),
        "{err:?}"
    );
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < total / 2, "read on past the cap: {sent} bytes sent");
}

#[tokio::test]
async fn a_body_at_the_cap_is_read_and_one_byte_more_is_refused() {
    let cap = 100_000;
    let server = mock_answering(200, vec![b'x'; cap]).await;
    let resp = http_client()
        .get(server.uri())
        .send()
        .await
        .expect("response");
    let body = read_bounded(resp, cap).await.expect("at the cap");
    assert_eq!(body.len(), cap);
    let resp = http_client()
        .get(server.uri())
        .send()
        .await
        .expect("response");
    let err = read_bounded(resp, cap - 1).await.expect_err("one over");
    assert!(
        matches!(err, BodyError::TooLarge { declared: Some(n), .. } if n == cap as u64),
        "{err:?}"
    );
}

// --- ARM -----------------------------------------------------------------------------------

/// An ARM client (`options`) against a hand-written server answering `answer`, and the server's
/// count of body bytes sent.
async fn raw_arm(answer: Answer, options: ArmClientOptions) -> (ArmClient, Arc<AtomicUsize>) {
    let (base, sent) = raw_server(answer).await;
    (arm(&base, options), sent)
}

/// An ARM client (`options`) against a wiremock server answering 200 with `body`.
async fn mock_arm(body: Vec<u8>, options: ArmClientOptions) -> (MockServer, ArmClient) {
    let server = mock_answering(200, body).await;
    let base = Url::parse(&server.uri()).expect("url");
    let arm = arm(&base, options);
    (server, arm)
}

#[tokio::test]
async fn arm_refuses_a_declared_body_over_its_cap_at_once_and_does_not_retry() {
    let declared = Answer::declared(200, 40 << 30);
    let (arm, _) = raw_arm(declared, arm_options()).await;
    let err = fails_promptly("get_virtual_machine", arm.get_virtual_machine(&vm())).await;
    assert_too_large(&err, RESPONSE_TOO_LARGE, MAX_ARM_RESPONSE_BYTES);
    assert!(!err.is_transient());
    assert_eq!(
        arm.stats().total_calls(),
        1,
        "a permanent error is not retried"
    );
}

#[tokio::test]
async fn arm_cuts_off_a_stream_at_its_default_cap() {
    let total = MAX_ARM_RESPONSE_BYTES + (16 << 20);
    let (arm, sent) = raw_arm(Answer::stream(200, total), arm_options()).await;
    let err = fails_promptly("get_virtual_machine", arm.get_virtual_machine(&vm())).await;
    assert_too_large(&err, RESPONSE_TOO_LARGE, MAX_ARM_RESPONSE_BYTES);
    assert!(sent.load(Ordering::SeqCst) < total);
}

#[tokio::test]
async fn arm_reads_a_body_at_its_cap() {
    let cap = 64 * 1024;
    let vm_body =
        serde_json::json!({"id": VM, "name": "vm-1", "location": "westeurope", "properties": {}});
    let body = json_of_len(&vm_body, cap);
    let at_cap = ArmClientOptions {
        max_response_bytes: cap,
        ..arm_options()
    };
    let (_server, arm) = mock_arm(body.clone(), at_cap).await;
    let got = arm
        .get_virtual_machine(&vm())
        .await
        .expect("a body at the cap is read");
    assert_eq!(got.name.as_deref(), Some("vm-1"));
    let under = ArmClientOptions {
        max_response_bytes: cap - 1,
        ..arm_options()
    };
    let (_server, arm) = mock_arm(body, under).await;
    let err = arm
        .get_virtual_machine(&vm())
        .await
        .expect_err("one byte over");
    assert_too_large(&err, RESPONSE_TOO_LARGE, cap - 1);
}

#[tokio::test]
async fn an_arm_error_body_over_the_cap_is_not_read_but_the_status_still_classifies() {
    let options = ArmClientOptions {
        max_response_bytes: 1 << 20,
        ..arm_options()
    };
    let stream = Answer::stream(503, 8 << 20);
    let (arm, _) = raw_arm(stream, options).await;
    let err = fails_promptly("get_virtual_machine", arm.get_virtual_machine(&vm())).await;
    match &err {
        ArmError::Transient {
            status: Some(503),
            message,
            ..
        } => assert!(message.contains("1048576-byte limit"), "{message}"),
        other => panic!("expected a transient 503, got {other:?}"),
    }
    assert_eq!(arm.stats().total_calls(), 3, "a 503 is still retried");
}

// --- blobs ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_blob_over_the_cap_is_refused_from_its_length_or_cut_off_while_streaming() {
    let total = 4 * MAX_BLOB_BYTES;
    for answer in [Answer::declared(200, 5 << 30), Answer::stream(200, total)] {
        let (arm, sent) = raw_arm(answer, arm_options()).await;
        let err = fails_promptly("download_blob_json", arm.download_blob_json(&template())).await;
        assert_too_large(&err, BLOB_TOO_LARGE, MAX_BLOB_BYTES);
        assert!(sent.load(Ordering::SeqCst) < total);
    }
}

#[tokio::test]
async fn a_blob_at_the_cap_is_read_and_one_byte_more_is_refused() {
    let doc = serde_json::json!({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "resources": []});
    let (_server, arm) = mock_arm(json_of_len(&doc, MAX_BLOB_BYTES), arm_options()).await;
    let got = arm
        .download_blob_json(&template())
        .await
        .expect("a blob at the cap is read");
    assert_eq!(got, doc);

    let (_server, arm) = mock_arm(json_of_len(&doc, MAX_BLOB_BYTES + 1), arm_options()).await;
    let err = arm
        .download_blob_json(&template())
        .await
        .expect_err("one byte over");
    assert_too_large(&err, BLOB_TOO_LARGE, MAX_BLOB_BYTES);
}

// --- Service Bus ---------------------------------------------------------------------------

#[tokio::test]
async fn a_service_bus_error_body_over_the_cap_is_not_read() {
    let (base, _) = raw_server(Answer::declared(400, 1 << 30)).await;
    let sender = ServiceBusSender::new(
        base,
        Arc::new(StaticToken(AccessToken::new("t"))),
        ServiceBusSenderOptions {
            request_timeout: CLIENT_TIMEOUT,
            ..ServiceBusSenderOptions::default()
        },
    )
    .expect("sender");
    let message =
        OutboundMessage::json("backup-vm", "m-1", &serde_json::json!({"vm": "vm-1"})).expect("msg");
    let err = fails_promptly("send", sender.send(message)).await;
    match err {
        MessagingError::Rejected {
            status: 400, body, ..
        } => {
            assert!(body.contains("65536-byte limit"), "{body}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
