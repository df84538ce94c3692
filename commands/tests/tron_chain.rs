//! The Tron verifier against a real HTTP server on 127.0.0.1 that plays a full node from the
//! responses in `fixtures/tron/` (documented format, see its README), and against nodes that
//! misbehave: down, erroring, answering garbage, too slow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiforge_commands::chain::tron::{TronConfig, TronConfigError, TronVerifier};
use aiforge_commands::chain::{
    ChainError, ChainVerifier, TokenTransfer, TxStatus, TRON_CONFIRMATIONS_MIN,
};
use aiforge_domain::wallet::Network;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::Value;

/// USDT's TRC-20 contract on mainnet.
const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
/// Addresses of the test-only keys in `fixtures/tron/README.md`.
const PLATFORM_WALLET: &str = "TJwFZdXrRpjctpvyZzHCRzRAz3E9CxVHbW";
const PAYER: &str = "TPaa2tSXpUCvDA9GQr1wZMegMBKXXXcwhd";
/// `getnowblock/now.json`.
const HEAD_BLOCK: u64 = 78_412_760;
/// 25 USDT in base units (6 decimals).
const PAYMENT: u128 = 25_000_000;
/// Long enough for any loaded CI machine to answer a local request, short enough for the
/// slow-node tests to end quickly.
const TEST_TIMEOUT: Duration = Duration::from_millis(300);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tron")
}

fn fixture(relative: &str) -> Value {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The txid recorded in `gettransactioninfobyid/<case>.json`.
fn txid(case: &str) -> String {
    fixture(&format!("gettransactioninfobyid/{case}.json"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn config(api_url: &str) -> TronConfig {
    TronConfig::new(api_url, USDT, PLATFORM_WALLET)
}

// ---------------------------------------------------------------------------------------------
// A fake full node: routes by path, and by the requested txid exactly as a node would
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Request {
    path: &'static str,
    body: Value,
    api_key: Option<String>,
}

struct NodeState {
    /// Every recorded `gettransactioninfobyid` answer, by its `id`.
    receipts: HashMap<String, Value>,
    head: Mutex<Value>,
    requests: Mutex<Vec<Request>>,
}

struct FakeNode {
    url: String,
    state: Arc<NodeState>,
}

impl FakeNode {
    /// A node whose head block is `getnowblock/<head>.json`.
    async fn start(head: &str) -> FakeNode {
        let mut receipts = HashMap::new();
        let dir = fixtures().join("gettransactioninfobyid");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let info: Value = serde_json::from_str(&text).unwrap();
            if let Some(id) = info["id"].as_str() {
                receipts.insert(id.to_owned(), info.clone());
            }
        }
        let state = Arc::new(NodeState {
            receipts,
            head: Mutex::new(fixture(&format!("getnowblock/{head}.json"))),
            requests: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/wallet/gettransactioninfobyid", post(transaction_info))
            .route("/wallet/getnowblock", post(now_block))
            .with_state(Arc::clone(&state));
        FakeNode {
            url: serve(router).await,
            state,
        }
    }

    fn verifier(&self) -> TronVerifier {
        TronVerifier::new(config(&self.url)).unwrap()
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }
}

fn record(state: &NodeState, path: &'static str, headers: &HeaderMap, body: Value) {
    let api_key = headers
        .get("TRON-PRO-API-KEY")
        .map(|v| v.to_str().unwrap().to_owned());
    state.requests.lock().unwrap().push(Request {
        path,
        body,
        api_key,
    });
}

async fn transaction_info(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(
        &state,
        "/wallet/gettransactioninfobyid",
        &headers,
        body.clone(),
    );
    // Exact match, as the node's store is keyed by the txid bytes: a verifier that sent the
    // hash with 0x or in upper case would find nothing.
    let found = body["value"]
        .as_str()
        .and_then(|txid| state.receipts.get(txid).cloned());
    Json(found.unwrap_or_else(|| fixture("gettransactioninfobyid/not_found.json")))
}

async fn now_block(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    record(&state, "/wallet/getnowblock", &headers, body);
    Json(state.head.lock().unwrap().clone())
}

/// Serves `router` on 127.0.0.1 on a free port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// A node that answers every request with `response` (rebuilt each time).
async fn misbehaving_node(response: fn() -> Response) -> String {
    serve(Router::new().fallback(move || async move { response() })).await
}

// ---------------------------------------------------------------------------------------------
// What the chain says about recorded transactions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_exact_payment_19_blocks_deep_is_confirmed() {
    let node = FakeNode::start("now").await;
    let verifier = node.verifier();

    let status = verifier.transaction(&txid("exact_payment")).await.unwrap();

    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: HEAD_BLOCK - 18,
            confirmations: 19,
            transfers: vec![TokenTransfer {
                from: PAYER.to_owned(),
                to: PLATFORM_WALLET.to_owned(),
                value: PAYMENT,
            }],
        }
    );
    assert_eq!(verifier.required_confirmations(), TRON_CONFIRMATIONS_MIN);
    assert_eq!(verifier.network(), Network::Tron);
}

#[tokio::test]
async fn a_payment_18_blocks_deep_is_one_confirmation_short() {
    let node = FakeNode::start("now").await;
    let verifier = node.verifier();

    let status = verifier
        .transaction(&txid("pending_18_confirmations"))
        .await
        .unwrap();

    let TxStatus::Succeeded {
        confirmations,
        transfers,
        ..
    } = status
    else {
        panic!("expected a success, got {status:?}");
    };
    assert_eq!(confirmations, 18);
    assert!(confirmations < verifier.required_confirmations());
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0].value, PAYMENT);
}

#[tokio::test]
async fn confirmations_are_counted_from_the_head_block_the_node_reports() {
    let node = FakeNode::start("previous").await;

    let status = node
        .verifier()
        .transaction(&txid("exact_payment"))
        .await
        .unwrap();

    assert!(
        matches!(
            status,
            TxStatus::Succeeded {
                confirmations: 18,
                ..
            }
        ),
        "{status:?}"
    );
    *node.state.head.lock().unwrap() = fixture("getnowblock/now.json");
    let status = node
        .verifier()
        .transaction(&txid("exact_payment"))
        .await
        .unwrap();
    assert!(
        matches!(
            status,
            TxStatus::Succeeded {
                confirmations: 19,
                ..
            }
        ),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_smaller_transfer_is_reported_with_its_exact_value() {
    let node = FakeNode::start("now").await;

    let status = node
        .verifier()
        .transaction(&txid("too_little"))
        .await
        .unwrap();

    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: HEAD_BLOCK - 25,
            confirmations: 26,
            transfers: vec![TokenTransfer {
                from: PAYER.to_owned(),
                to: PLATFORM_WALLET.to_owned(),
                value: 24_990_000,
            }],
        }
    );
}

#[tokio::test]
async fn a_transfer_of_another_token_is_left_out() {
    let node = FakeNode::start("now").await;

    let status = node
        .verifier()
        .transaction(&txid("wrong_token"))
        .await
        .unwrap();

    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: HEAD_BLOCK - 31,
            confirmations: 32,
            transfers: vec![],
        }
    );
}

#[tokio::test]
async fn a_transfer_to_another_recipient_is_left_out() {
    let node = FakeNode::start("now").await;

    let status = node
        .verifier()
        .transaction(&txid("wrong_recipient"))
        .await
        .unwrap();

    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: HEAD_BLOCK - 44,
            confirmations: 45,
            transfers: vec![],
        }
    );
}

#[tokio::test]
async fn a_reverted_transfer_is_failed() {
    let node = FakeNode::start("now").await;

    let status = node
        .verifier()
        .transaction(&txid("reverted"))
        .await
        .unwrap();

    assert_eq!(
        status,
        TxStatus::Failed {
            block: HEAD_BLOCK - 52
        }
    );
}

#[tokio::test]
async fn an_unknown_transaction_is_not_found() {
    let node = FakeNode::start("now").await;
    let unknown = "1f3d6a0c9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817065f4e";

    let status = node.verifier().transaction(unknown).await.unwrap();

    assert_eq!(status, TxStatus::NotFound);
    let requests = node.requests();
    assert_eq!(requests.len(), 1, "no head block is needed: {requests:?}");
    assert_eq!(requests[0].body["value"], unknown);
}

#[tokio::test]
async fn a_hash_with_0x_or_in_upper_case_is_asked_for_in_the_nodes_form() {
    let node = FakeNode::start("now").await;
    let verifier = node.verifier();
    let txid = txid("exact_payment");

    for hash in [format!("0x{txid}"), txid.to_ascii_uppercase()] {
        let status = verifier.transaction(&hash).await.unwrap();
        assert!(
            matches!(
                status,
                TxStatus::Succeeded {
                    confirmations: 19,
                    ..
                }
            ),
            "{hash}: {status:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_hash_is_rejected_without_asking_the_node() {
    let node = FakeNode::start("now").await;
    let verifier = node.verifier();
    let txid = txid("exact_payment");

    for hash in [
        "",
        "not a hash",
        &txid[..63],
        &format!("{txid}00"),
        &format!("{}z", &txid[..63]),
    ] {
        let err = verifier.transaction(hash).await.unwrap_err();
        assert!(
            matches!(err, ChainError::MalformedTxHash(_)),
            "{hash}: {err:?}"
        );
    }
    assert!(node.requests().is_empty());
}

#[tokio::test]
async fn the_api_key_is_sent_in_the_tron_pro_api_key_header() {
    let node = FakeNode::start("now").await;
    let mut config = config(&node.url);
    config.api_key = Some(SecretString::from("3f9a1c2e-0b7d-4e55-9a61-2c8d7e4f1b06"));
    let verifier = TronVerifier::new(config).unwrap();

    verifier.transaction(&txid("exact_payment")).await.unwrap();

    let requests = node.requests();
    assert_eq!(
        requests.iter().map(|r| r.path).collect::<Vec<_>>(),
        ["/wallet/gettransactioninfobyid", "/wallet/getnowblock"]
    );
    for request in requests {
        assert_eq!(
            request.api_key.as_deref(),
            Some("3f9a1c2e-0b7d-4e55-9a61-2c8d7e4f1b06"),
            "{}",
            request.path
        );
    }
    assert!(
        !format!("{verifier:?}").contains("3f9a1c2e"),
        "the key leaks in Debug"
    );
}

// ---------------------------------------------------------------------------------------------
// Nodes that cannot be believed
// ---------------------------------------------------------------------------------------------

fn assert_unavailable(result: Result<TxStatus, ChainError>) {
    assert!(
        matches!(
            result,
            Err(ChainError::Unavailable {
                network: Network::Tron,
                ..
            })
        ),
        "{result:?}"
    );
}

fn assert_bad_response(result: Result<TxStatus, ChainError>) {
    assert!(
        matches!(
            result,
            Err(ChainError::BadResponse {
                network: Network::Tron,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_node_that_is_down_is_unavailable() {
    // A port that was free a moment ago: nothing listens there, so connecting is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let verifier = TronVerifier::new(config(&format!("http://{addr}"))).unwrap();

    let result = verifier.transaction(&txid("exact_payment")).await;

    assert_unavailable(result);
}

#[tokio::test]
async fn a_node_answering_500_is_a_bad_response() {
    let url = misbehaving_node(|| {
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
    })
    .await;

    let result = TronVerifier::new(config(&url))
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_bad_response(result);
}

#[tokio::test]
async fn a_node_asking_to_retry_later_is_unavailable() {
    let url = misbehaving_node(|| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"Error":"rate limit exceeded"}"#,
        )
            .into_response()
    })
    .await;

    let result = TronVerifier::new(config(&url))
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_unavailable(result);
}

#[tokio::test]
async fn a_node_answering_html_is_a_bad_response() {
    let url =
        misbehaving_node(|| "<html><body>502 Bad Gateway</body></html>".into_response()).await;

    let result = TronVerifier::new(config(&url))
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_bad_response(result);
}

#[tokio::test]
async fn a_node_answering_truncated_json_is_a_bad_response() {
    let url = misbehaving_node(|| {
        r#"{"id":"907da2739c61a798e080fd5d16ab30b9","blockNum"#.into_response()
    })
    .await;

    let result = TronVerifier::new(config(&url))
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_bad_response(result);
}

#[tokio::test]
async fn a_node_answering_a_json_array_is_a_bad_response() {
    let url = misbehaving_node(|| "[]".into_response()).await;

    let result = TronVerifier::new(config(&url))
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_bad_response(result);
}

#[tokio::test]
async fn a_node_reporting_an_error_object_is_a_bad_response() {
    let url = misbehaving_node(|| {
        r#"{"Error":"class java.lang.IllegalArgumentException : invalid hex number"}"#
            .into_response()
    })
    .await;

    let result = TronVerifier::new(config(&url))
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_bad_response(result);
}

#[tokio::test]
async fn an_unreadable_head_block_is_a_bad_response_not_a_confirmation() {
    let node = FakeNode::start("now").await;
    *node.state.head.lock().unwrap() = serde_json::json!({ "blockID": "0000000004ac7bd8" });

    let result = node.verifier().transaction(&txid("exact_payment")).await;

    assert_bad_response(result);
}

#[tokio::test]
async fn a_node_slower_than_the_timeout_is_unavailable() {
    let url = serve(Router::new().fallback(|| async {
        tokio::time::sleep(TEST_TIMEOUT * 20).await;
        Json(fixture("gettransactioninfobyid/exact_payment.json"))
    }))
    .await;
    let mut config = config(&url);
    config.rpc_timeout = TEST_TIMEOUT;

    let result = TronVerifier::new(config)
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_unavailable(result);
}

#[tokio::test]
async fn a_node_that_stalls_in_the_middle_of_its_answer_is_unavailable() {
    let url = misbehaving_node(|| {
        let first = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"id\":\""))
        });
        let never = futures::stream::pending();
        Body::from_stream(futures::StreamExt::chain(first, never)).into_response()
    })
    .await;
    let mut config = config(&url);
    config.rpc_timeout = TEST_TIMEOUT;

    let result = TronVerifier::new(config)
        .unwrap()
        .transaction(&txid("exact_payment"))
        .await;

    assert_unavailable(result);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Tells whether an error is the one a bad configuration must be refused with.
type ExpectedRefusal = fn(&TronConfigError) -> bool;

#[test]
fn a_configuration_that_cannot_work_is_refused_at_startup() {
    let url = "https://api.trongrid.io";
    let cases: [(TronConfig, ExpectedRefusal); 6] = [
        (
            TronConfig::new(url, "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6T", PLATFORM_WALLET),
            |e| {
                matches!(
                    e,
                    TronConfigError::InvalidAddress {
                        field: "token_contract",
                        ..
                    }
                )
            },
        ),
        (
            TronConfig::new(url, USDT, "0x625a703cf756a6472a2728b6e165ce2b50fc3b16"),
            |e| {
                matches!(
                    e,
                    TronConfigError::InvalidAddress {
                        field: "platform_wallet",
                        ..
                    }
                )
            },
        ),
        (
            TronConfig::new("api.trongrid.io", USDT, PLATFORM_WALLET),
            |e| matches!(e, TronConfigError::InvalidApiUrl),
        ),
        (
            TronConfig {
                api_key: Some(SecretString::from("line\nbreak")),
                ..TronConfig::new(url, USDT, PLATFORM_WALLET)
            },
            |e| matches!(e, TronConfigError::InvalidApiKey),
        ),
        (
            TronConfig {
                confirmations_min: 0,
                ..TronConfig::new(url, USDT, PLATFORM_WALLET)
            },
            |e| matches!(e, TronConfigError::ZeroConfirmations),
        ),
        (
            TronConfig {
                rpc_timeout: Duration::ZERO,
                ..TronConfig::new(url, USDT, PLATFORM_WALLET)
            },
            |e| matches!(e, TronConfigError::ZeroTimeout),
        ),
    ];
    for (config, expected) in cases {
        let err = TronVerifier::new(config).unwrap_err();
        assert!(expected(&err), "{err:?}");
    }
}
