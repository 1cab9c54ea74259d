//! The MLLM client against the mock OpenAI-compatible server on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use echo_workbench::jobs::CancelToken;
use echo_workbench::mllm::mock::{Fault, FaultPlan, MockConfig, MockServer, Responder};
use echo_workbench::mllm::{ChatRequest, EndpointConfig, MllmClient, MllmError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn write_image(dir: &Path, name: &str, w: u32, h: u32, format: image::ImageFormat) -> PathBuf {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90]));
    let path = dir.join(name);
    image::DynamicImage::ImageRgb8(img)
        .save_with_format(&path, format)
        .unwrap();
    path
}

fn endpoint(url: &str) -> EndpointConfig {
    EndpointConfig {
        name: "mock".into(),
        base_url: url.into(),
        model: "mock-vl".into(),
        timeout_s: 5.0,
        max_retries: 2,
        retry_base_ms: 10,
        ..EndpointConfig::default()
    }
}

fn client(url: &str) -> MllmClient {
    MllmClient::new(endpoint(url)).unwrap()
}

fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).unwrap()
}

fn question() -> ChatRequest {
    ChatRequest::new().text("Is there a defect?\nB. yes\nC. no\nAnswer with the letter.")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The base64 payload of a data URL, decoded.
fn data_url_bytes(url: &str) -> (String, Vec<u8>) {
    let (header, b64) = url.split_once(',').unwrap();
    let mime = header
        .strip_prefix("data:")
        .unwrap()
        .strip_suffix(";base64")
        .unwrap();
    (
        mime.to_string(),
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

#[tokio::test]
async fn request_shape_text_images_order_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write_image(dir.path(), "ref.png", 40, 30, image::ImageFormat::Png);
    let query = write_image(dir.path(), "query.jpg", 24, 24, image::ImageFormat::Jpeg);
    let server = mock(MockConfig::default());
    let mut cfg = endpoint(&server.url());
    cfg.temperature = 0.0;
    cfg.max_tokens = 64;
    cfg.extra_body.insert("top_p".into(), json!(0.9));
    cfg.extra_body.insert("seed".into(), json!(7));
    let client = MllmClient::new(cfg).unwrap();
    let req = ChatRequest::new()
        .system("You are an inspector.")
        .text("Image 1 is a normal reference.")
        .image(&reference)
        .image(&query)
        .text("Is there a defect?\nB. yes\nC. no");
    let reply = client.chat(&req, &CancelToken::new()).await.unwrap();
    assert_eq!(
        reply.text, "B",
        "the mock answers the first option's letter"
    );
    assert_eq!(reply.attempts, 1);
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));

    let bodies = server.requests();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    // Sent in pieces around the images, still as one ordinary request: its length
    // is declared up front (not chunked), and it is the whole body.
    let recorded = &server.recorded()[0];
    let declared = recorded.content_length.expect("a Content-Length header");
    assert_eq!(declared, serde_json::to_vec(body).unwrap().len() as u64);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "model",
            "messages",
            "temperature",
            "max_tokens",
            "top_p",
            "seed"
        ]
    );
    assert_eq!(body["model"], "mock-vl");
    assert_eq!(body["temperature"], json!(0.0));
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["top_p"], json!(0.9));
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are an inspector."})
    );
    let user = &body["messages"][1];
    assert_eq!(user["role"], "user");
    let content = user["content"].as_array().unwrap();
    let types: Vec<&str> = content
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text", "image_url", "image_url", "text"]);
    assert_eq!(content[0]["text"], "Image 1 is a normal reference.");
    // PNG and JPEG files go out unchanged, in order.
    let (mime, bytes) = data_url_bytes(content[1]["image_url"]["url"].as_str().unwrap());
    assert_eq!(
        (mime.as_str(), &bytes),
        ("image/png", &std::fs::read(&reference).unwrap())
    );
    let (mime, bytes) = data_url_bytes(content[2]["image_url"]["url"].as_str().unwrap());
    assert_eq!(
        (mime.as_str(), &bytes),
        ("image/jpeg", &std::fs::read(&query).unwrap())
    );

    // The summary is the body with each data URL replaced by its description.
    let mut expected = body.clone();
    for (i, path, w, h, mime) in [
        (1, &reference, 40, 30, "image/png"),
        (2, &query, 24, 24, "image/jpeg"),
    ] {
        let file = std::fs::read(path).unwrap();
        expected["messages"][1]["content"][i]["image_url"]["url"] = json!({
            "sha256": sha256_hex(&file), "bytes": file.len(), "mime": mime, "width": w, "height": h
        });
    }
    assert_eq!(reply.request_summary, expected);
    assert!(!reply.request_summary.to_string().contains("base64"));
}

#[tokio::test]
async fn images_are_encoded_once_per_file_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_image(dir.path(), "a.png", 64, 32, image::ImageFormat::Png);
    let b = write_image(dir.path(), "b.bmp", 20, 20, image::ImageFormat::Bmp);
    let server = mock(MockConfig::default());
    let client = client(&server.url());
    let req = question().image(&a).image(&b);
    for _ in 0..3 {
        client.chat(&req, &CancelToken::new()).await.unwrap();
    }
    // Clones share the cache.
    client
        .clone()
        .chat(&req, &CancelToken::new())
        .await
        .unwrap();
    let stats = client.image_cache_stats();
    assert_eq!(
        (stats.encodes, stats.hits, stats.entries),
        (2, 6, 2),
        "{stats:?}"
    );
    // BMP is re-encoded as PNG.
    let body = &server.requests()[0];
    let (mime, _) = data_url_bytes(
        body["messages"][0]["content"][2]["image_url"]["url"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(mime, "image/png");

    // A downscaling client: the server receives at most 16 pixels a side.
    let mut cfg = endpoint(&server.url());
    cfg.image_max_side = Some(16);
    cfg.jpeg_quality = Some(85);
    let small = MllmClient::new(cfg).unwrap();
    let reply = small
        .chat(&question().image(&a), &CancelToken::new())
        .await
        .unwrap();
    let url = &reply.request_summary["messages"][0]["content"][1]["image_url"]["url"];
    assert_eq!(
        (
            url["width"].clone(),
            url["height"].clone(),
            url["mime"].clone()
        ),
        (json!(16), json!(8), json!("image/jpeg"))
    );
    let sent = server.requests().pop().unwrap();
    let (_, bytes) = data_url_bytes(
        sent["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .unwrap(),
    );
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (16, 8));
}

#[tokio::test]
async fn missing_image_fails_before_sending() {
    let server = mock(MockConfig::default());
    let client = client(&server.url());
    let err = client
        .chat(&question().image("no/such/image.png"), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::Image { .. }), "{err}");
    assert!(err.to_string().contains("no/such/image.png"), "{err}");
    assert!(server.recorded().is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = mock(MockConfig {
        faults: FaultPlan::script([Fault::Http500, Fault::Http500]),
        ..MockConfig::default()
    });
    let reply = client(&server.url())
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(reply.attempts, 3);
    assert_eq!(reply.text, "B");
    assert_eq!(server.chat_count(), 3);
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    let server = mock(MockConfig {
        faults: FaultPlan::always(Fault::Http500),
        ..MockConfig::default()
    });
    let err = client(&server.url())
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::Http { status: 500, .. }), "{err}");
    assert_eq!(server.chat_count(), 3, "1 attempt + max_retries 2");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/chat/completions", server.url())),
        "{msg}"
    );
    assert!(msg.contains("scripted fault"), "{msg}");
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let server = mock(MockConfig {
        faults: FaultPlan::script([Fault::Drop]),
        ..MockConfig::default()
    });
    let reply = client(&server.url())
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(reply.attempts, 2);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = mock(MockConfig {
        faults: FaultPlan::script([Fault::Http429 {
            retry_after_s: Some(1),
        }]),
        ..MockConfig::default()
    });
    let start = Instant::now();
    let reply = client(&server.url())
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(reply.attempts, 2);
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_millis(2000), "{waited:?}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_image(dir.path(), "a.png", 8, 8, image::ImageFormat::Png);
    // 400: vLLM's one-image limit.
    let server = mock(MockConfig {
        max_images: Some(1),
        ..MockConfig::default()
    });
    let err = client(&server.url())
        .chat(&question().image(&a).image(&a), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::Http { status: 400, .. }), "{err}");
    assert!(err.to_string().contains("At most 1 image(s)"), "{err}");
    assert!(err.hint().unwrap().contains("--limit-mm-per-prompt"));
    assert_eq!(server.recorded().len(), 1);

    // 404: a model the server does not serve.
    let server = mock(MockConfig {
        reject_unknown_model: true,
        ..MockConfig::default()
    });
    let mut cfg = endpoint(&server.url());
    cfg.model = "no-such-model".into();
    let err = MllmClient::new(cfg)
        .unwrap()
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::Http { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("no-such-model"), "{err}");
    assert_eq!(server.recorded().len(), 1);

    // 404: a wrong base URL.
    let url = server.url().replace("/v1", "/api");
    let err = client(&url)
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::Http { status: 404, .. }), "{err}");
    assert!(err.hint().unwrap().contains("/v1"));
    assert_eq!(server.recorded().len(), 2);
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let server = mock(MockConfig {
        faults: FaultPlan::always(Fault::Hang),
        ..MockConfig::default()
    });
    let mut cfg = endpoint(&server.url());
    cfg.timeout_s = 0.3;
    cfg.max_retries = 1;
    let start = Instant::now();
    let err = MllmClient::new(cfg)
        .unwrap()
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, MllmError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("within 0.3 s"), "{err}");
    assert_eq!(server.chat_count(), 2, "timeouts are retried");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn cancellation_ends_a_hanging_request_promptly() {
    let server = mock(MockConfig {
        faults: FaultPlan::always(Fault::Hang),
        ..MockConfig::default()
    });
    let client = client(&server.url());
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let cancelled_at = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
        Instant::now()
    });
    let err = client.chat(&question(), &cancel).await.unwrap_err();
    let returned = Instant::now();
    let cancelled_at = cancelled_at.await.unwrap();
    assert!(matches!(err, MllmError::Cancelled { .. }), "{err}");
    let lag = returned.saturating_duration_since(cancelled_at);
    assert!(lag < Duration::from_millis(200), "{lag:?}");
    assert_eq!(client.in_flight(), 0, "the slot is given back");
    // An already-cancelled token sends nothing.
    let before = server.recorded().len();
    assert!(client.chat(&question(), &cancel).await.is_err());
    assert_eq!(server.recorded().len(), before);
}

#[tokio::test]
async fn a_200_that_is_not_json_is_retried_like_a_5xx_and_every_try_counts() {
    let server = mock(MockConfig {
        faults: FaultPlan::script([
            Fault::Garbage,
            Fault::Garbage,
            Fault::Garbage,
            Fault::Garbage,
            Fault::EmptyContent,
            Fault::Garbage,
        ]),
        ..MockConfig::default()
    });
    // 1 attempt + max_retries 2, all answered by a "gateway" page.
    let client = client(&server.url());
    let tries = std::sync::atomic::AtomicU32::new(0);
    let err = client
        .chat_counted(&question(), &CancelToken::new(), &tries)
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::NotJson { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("not JSON") && msg.contains("<html><body><h1>mock gateway"),
        "{msg}"
    );
    assert!(msg.contains(&server.url()), "{msg}");
    assert_eq!(server.chat_count(), 3, "bounded by max_retries");
    assert_eq!(tries.load(std::sync::atomic::Ordering::Relaxed), 3);
    // Past a gateway page to an empty completion: that one is not retried.
    let err = client
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::NoContent { .. }), "{err}");
    assert!(err.to_string().contains("\"content\":\"\""), "{err}");
    assert_eq!(server.chat_count(), 5);
    // Past a gateway page to an answer, both tries in the reply's count.
    let reply = client.chat(&question(), &CancelToken::new()).await.unwrap();
    assert_eq!(reply.attempts, 2);
    assert_eq!(server.chat_count(), 7);
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let client = client(&url);
    let err = client
        .chat(&question(), &CancelToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, MllmError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("{url}/chat/completions")),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("server running"));
    let report = client.probe().await;
    assert!(!report.ok);
    assert!(
        report.message.contains("cannot connect"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn probe_reports_a_working_endpoint() {
    let server = mock(MockConfig {
        models: vec!["mock-vl".into(), "other".into()],
        responder: Responder::fixed("red and blue"),
        ..MockConfig::default()
    });
    let client = client(&server.url());
    assert_eq!(client.models().await.unwrap(), ["mock-vl", "other"]);
    let report = client.probe().await;
    assert!(
        report.ok && report.model_listed && report.two_images_ok,
        "{report:?}"
    );
    assert_eq!(report.reply.as_deref(), Some("red and blue"));
    assert!(
        report.message.contains("two-image request"),
        "{}",
        report.message
    );
    let probe = server.requests().pop().unwrap();
    assert_eq!(probe["messages"][0]["content"].as_array().unwrap().len(), 3);

    let mut cfg = endpoint(&server.url());
    cfg.model = "unlisted".into();
    let report = MllmClient::new(cfg).unwrap().probe().await;
    assert!(report.ok && !report.model_listed, "{report:?}");
    assert!(
        report.message.contains("ignores the model name"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn probe_explains_the_vllm_image_limit() {
    let server = mock(MockConfig {
        max_images: Some(1),
        ..MockConfig::default()
    });
    let report = client(&server.url()).probe().await;
    assert!(
        !report.ok && !report.two_images_ok && report.model_listed,
        "{report:?}"
    );
    assert_eq!(
        report.message,
        "the server accepts one image per prompt: start vLLM with --limit-mm-per-prompt '{\"image\":2}'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_per_client() {
    let server = mock(MockConfig {
        latency: Duration::from_millis(200),
        ..MockConfig::default()
    });
    let mut cfg = endpoint(&server.url());
    cfg.max_in_flight = 2;
    let client = MllmClient::new(cfg).unwrap();
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (client, most) = (client.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                most.fetch_max(client.in_flight(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(&question(), &CancelToken::new()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let took = start.elapsed();
    watcher.abort();
    assert!(took >= Duration::from_millis(580), "{took:?}");
    assert!(took < Duration::from_millis(1100), "{took:?}");
    assert_eq!(server.peak_in_flight(), 2);
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn the_mock_rejects_malformed_requests() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = mock(MockConfig::default());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let chat = format!("{}/chat/completions", server.url());
    let png = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::new(4, 4))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    };
    let with_image = |url: String| {
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]})
        .to_string()
    };
    let cases: Vec<(String, &str)> =
        vec![
        ("{not json".into(), "not valid JSON"),
        (json!({"messages": []}).to_string(), "`model` is required"),
        (json!({"model": "m"}).to_string(), "`messages` is required"),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}).to_string(),
            "role must be",
        ),
        (
            with_image("https://example.com/a.png".into()),
            "only base64 data URLs",
        ),
        (with_image("data:image/png;base64,%%%".into()), "base64 is invalid"),
        (
            with_image(format!("data:image/jpeg;base64,{png}")),
            "declares image/jpeg but holds image/png",
        ),
        (
            with_image(format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\ngarbage")
            )),
            "does not decode",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
            "max_tokens",
        ),
    ];
    for (body, expected) in cases {
        let resp = http
            .post(&chat)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let reply: Value = resp.json().await.unwrap();
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let ok = http
        .post(&chat)
        .header("content-type", "application/json")
        .body(with_image(format!("data:image/png;base64,{png}")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let missing = http
        .get(format!("{}/nothing", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let wrong_method = http.get(&chat).send().await.unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);
    assert_eq!(
        server.chat_count(),
        1,
        "only the valid request reached the responder"
    );
}

const KEY_VAR: &str = "ECHO_MLLM_TEST_KEY";
const WRONG_KEY_VAR: &str = "ECHO_MLLM_TEST_WRONG_KEY";
const KEY: &str = "sk-test-7f3a9c1e5b";
const WRONG_KEY: &str = "sk-wrong-2d4e6f8a0b";

/// Runs [`api_key_child`] in a child process with the keys in its environment:
/// setting variables in this multi-threaded test process would be unsound.
#[test]
fn api_key_is_sent_as_bearer_and_never_leaked() {
    // The child's name as the test binary lists it: its module path inside the binary.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let child = format!("{module}::api_key_child");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &child, "--nocapture", "--test-threads=1"])
        .env(KEY_VAR, KEY)
        .env(WRONG_KEY_VAR, WRONG_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
fn api_key_child() {
    if std::env::var(KEY_VAR).is_err() {
        return; // only meaningful when started by the test above
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = mock(MockConfig {
            require_api_key: Some(KEY.into()),
            ..MockConfig::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let a = write_image(dir.path(), "a.png", 8, 8, image::ImageFormat::Png);
        let mut cfg = endpoint(&server.url());
        cfg.api_key_env = Some(KEY_VAR.into());
        let client = MllmClient::new(cfg.clone()).unwrap();
        let reply = client
            .chat(&question().image(&a), &CancelToken::new())
            .await
            .unwrap();
        assert_eq!(client.models().await.unwrap(), ["mock-vl"]);
        for r in server.recorded() {
            assert_eq!(r.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
        }
        let report = client.probe().await;
        assert!(report.ok, "{report:?}");

        // A wrong key: the server echoes it, the client's error must not.
        let mut wrong = cfg.clone();
        wrong.api_key_env = Some(WRONG_KEY_VAR.into());
        let wrong_client = MllmClient::new(wrong.clone()).unwrap();
        let err = wrong_client
            .chat(&question(), &CancelToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, MllmError::Http { status: 401, .. }), "{err}");
        assert!(err.hint().unwrap().contains("API key"));
        let models_err = wrong_client.models().await.unwrap_err();
        let wrong_report = wrong_client.probe().await;
        assert!(!wrong_report.ok);

        // An unset variable is an error naming it, before anything is sent.
        let mut unset = cfg.clone();
        unset.api_key_env = Some("ECHO_MLLM_TEST_UNSET_VARIABLE".into());
        let err_unset = MllmClient::new(unset)
            .unwrap()
            .chat(&question(), &CancelToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err_unset, MllmError::MissingApiKey { .. }));
        assert!(
            err_unset
                .to_string()
                .contains("ECHO_MLLM_TEST_UNSET_VARIABLE")
        );

        let texts = [
            format!("{client:?}"),
            format!("{wrong_client:?}"),
            format!("{cfg:?}"),
            format!("{wrong:?}"),
            format!("{reply:?}"),
            reply.request_summary.to_string(),
            serde_json::to_string(&cfg).unwrap(),
            format!("{report:?}"),
            format!("{wrong_report:?}"),
            err.to_string(),
            format!("{err:?}"),
            models_err.to_string(),
            err_unset.to_string(),
        ];
        for text in texts {
            assert!(!text.contains(KEY), "key leaked: {text}");
            assert!(!text.contains(WRONG_KEY), "wrong key leaked: {text}");
        }
    });
}

/// The demo oracle answers every bundled sample question correctly when the client
/// sends the query image unchanged (identical questions about different images are
/// told apart by the image's hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_responder_answers_the_sample_dataset() {
    use echo_workbench::dataset::mmad::MmadDataset;
    use echo_workbench::dataset::paths::DatasetRoot;
    use echo_workbench::mllm::mock::Oracle;

    let assets = echo_workbench::assets_dir();
    let dataset = MmadDataset::load(&assets.join("sample/mmad.json")).unwrap();
    let root = DatasetRoot::new(assets.join("sample"));
    let oracle = Oracle::from_mmad(&dataset, Some(&root));
    assert_eq!(oracle.len(), dataset.question_count());
    let server = mock(MockConfig {
        responder: Responder::oracle(oracle),
        ..MockConfig::default()
    });
    let mut cfg = endpoint(&server.url());
    cfg.max_in_flight = 8;
    let client = MllmClient::new(cfg).unwrap();
    let tasks: Vec<_> = dataset
        .questions()
        .map(|q| {
            let options: Vec<String> = q
                .question
                .options
                .iter()
                .map(|(letter, text)| format!("{letter}: {text}"))
                .collect();
            let req = ChatRequest::new()
                .image(root.resolve(q.key).unwrap())
                .text(format!(
                    "{}\n{}\nAnswer with the option's letter.",
                    q.question.text,
                    options.join("\n")
                ));
            let expected = q.question.answer.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let reply = client.chat(&req, &CancelToken::new()).await.unwrap();
                (reply.text, expected)
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for t in tasks {
        let (got, expected) = t.await.unwrap();
        if got != expected {
            wrong.push((got, expected));
        }
    }
    assert!(wrong.is_empty(), "{} wrong: {wrong:?}", wrong.len());
}
