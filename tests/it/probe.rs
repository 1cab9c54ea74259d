//! `probe` against the in-repo mock server: a healthy endpoint, vLLM's one-image
//! limit, and a server that is down.

use assert_cmd::Command;
use echo_workbench::mllm::mock::{MockConfig, MockServer};
use predicates::prelude::*;

fn probe(url: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("echo-workbench")
        .unwrap()
        .args([
            "probe",
            "--endpoint",
            url,
            "--model",
            "mock-model",
            "--timeout-s",
            "5",
        ])
        .assert()
}

#[test]
fn healthy_endpoint_passes() {
    let server = MockServer::start(MockConfig {
        models: vec!["mock-model".into()],
        ..MockConfig::default()
    })
    .unwrap();
    probe(&server.url())
        .success()
        .stdout(predicate::str::contains("two images: yes"));
}

#[test]
fn one_image_server_names_the_fix() {
    let server = MockServer::start(MockConfig {
        models: vec!["mock-model".into()],
        max_images: Some(1),
        ..MockConfig::default()
    })
    .unwrap();
    probe(&server.url())
        .failure()
        .stdout(predicate::str::contains("--limit-mm-per-prompt"));
}

#[test]
fn server_down_fails_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    probe(&format!("http://127.0.0.1:{port}/v1"))
        .failure()
        .stdout(predicate::str::contains(format!("127.0.0.1:{port}")));
}
