//! End-to-end through the real `aiforge` binary: it serves its OpenAPI document (the same one
//! `aiforge openapi` prints) and the browsable page with its script and style, and every
//! operation of the document is a route the running router answers: not its "no such route"
//! fallback, not 405. With `api/tests/openapi.rs`, which reads the router's routes from the
//! source, the router and the document are checked both ways.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use reqwest::Method;
use serde_json::Value;
use support::*;

/// A value for a path parameter that the route's own parsing accepts (`year`, `month`).
fn probe_value(name: &str) -> &'static str {
    match name {
        "year" => "2026",
        "month" => "1",
        _ => "openapi-probe",
    }
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => probe_value(name).to_string(),
                None => segment.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_server_serves_its_openapi_document_and_answers_every_operation_in_it() {
    let data = temp_dir();
    let server = Server::start(&data, &[]);
    let http = client();

    let response = http
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    let printed = std::process::Command::new(binary())
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert_eq!(
        served,
        serde_json::from_slice::<Value>(&printed.stdout).unwrap()
    );
    assert_eq!(served["openapi"], "3.1.0");

    for (path, content_type) in [
        ("/api/docs", "text/html"),
        ("/api/docs/app.js", "text/javascript"),
        ("/api/docs/app.css", "text/css"),
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let served_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            served_type.starts_with(content_type),
            "{path}: {served_type}"
        );
        if path == "/api/docs" {
            let csp = response.headers()["content-security-policy"]
                .to_str()
                .unwrap();
            assert!(csp.contains("script-src 'self'"), "{csp}");
        }
    }

    // Without credentials most operations answer 401, public ones their own answer or their
    // own 404 ("no such service"); never the router's fallback.
    let mut probed = 0;
    for (path, item) in served["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(verb) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            // `/metrics` is served on the metrics listener only (README, "/metrics").
            let url = match path.as_str() {
                "/metrics" => server.metrics_url(path),
                _ => server.url(&concrete(path)),
            };
            let response = http.request(verb, url).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(
                !(status == 404 && body["error"]["message"] == "no such route"),
                "{method} {path}: the running router has no such route"
            );
            probed += 1;
        }
    }
    assert!(probed > 90, "only {probed} operations probed");
    server.stop();
}
