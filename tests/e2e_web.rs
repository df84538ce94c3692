//! End-to-end over HTTP: the web app served at `/` beside the API, and the browser session
//! cookie with its CSRF rule (`api/src/session.rs`), against the real `aiforge` binary. The same
//! journeys in a real browser are in `web/e2e/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Response;
use serde_json::{json, Value};
use support::*;

/// The public URL these tests configure: the Origin check compares with it, whatever the port.
const PUBLIC: &str = "http://aiforge.test";
const PASSWORD: &str = "correct horse battery staple";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

async fn send_json(
    server: &Server,
    path: &str,
    body: Value,
    pairs: &[(&'static str, &str)],
) -> Response {
    client()
        .post(server.url(path))
        .headers(headers(pairs))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn code_of(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn the_web_app_is_served_at_the_root_and_unknown_api_paths_stay_json_404s() {
    let data = temp_dir();
    let web = temp_dir();
    std::fs::write(web.join("index.html"), "<!doctype html><title>app</title>").unwrap();
    std::fs::create_dir_all(web.join("_app/immutable")).unwrap();
    std::fs::write(web.join("_app/immutable/start.abc.js"), "export {};").unwrap();
    let server = Server::start(&data, &[("AIFORGE_WEB_DIR", web.to_str().unwrap())]);

    for path in ["/", "/account", "/chat/some-conversation"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            !csp.split(';')
                .any(|d| d.trim().starts_with("script-src") && d.contains("unsafe-inline")),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(response.headers().contains_key("referrer-policy"));
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(
            response.text().await.unwrap(),
            "<!doctype html><title>app</title>",
            "{path}"
        );
    }
    let asset = client()
        .get(server.url("/_app/immutable/start.abc.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let missing = client()
        .get(server.url("/_app/immutable/gone.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "a missing asset is not the page");

    let (status, body) = get(&server, "/api/no/such/route", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, body) = get(&server, "/api", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let posted = client().post(server.url("/account")).send().await.unwrap();
    assert_eq!(posted.status(), 404, "only GET and HEAD reach the pages");
    let (status, _) = get(&server, "/healthz", None).await;
    assert_eq!(status, 200);
    server.stop();
}

#[tokio::test]
async fn a_browser_session_is_an_http_only_cookie_and_cookie_writes_need_the_csrf_proof() {
    let data = temp_dir();
    let server = Server::start(&data, &[("AIFORGE_PUBLIC_URL", PUBLIC)]);
    let (status, body) = post(
        &server,
        "/api/auth/register",
        json!({"email": "ada@example.com", "username": "ada", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let credentials = json!({"email": "ada@example.com", "password": PASSWORD});

    // A sign-in asking for a cookie from another origin is refused and sets nothing (login CSRF).
    let foreign = send_json(
        &server,
        "/api/auth/login",
        credentials.clone(),
        &[("x-aiforge-csrf", "1"), ("origin", "http://evil.test")],
    )
    .await;
    assert!(!foreign.headers().contains_key("set-cookie"));
    assert_eq!(code_of(foreign).await, (403, "csrf_refused".into()));

    // The browser's sign-in: the token goes into the cookie, not the body.
    let browser = send_json(
        &server,
        "/api/auth/login",
        credentials.clone(),
        &[("x-aiforge-csrf", "1"), ("origin", PUBLIC)],
    )
    .await;
    assert_eq!(browser.status(), 200);
    let set_cookie = browser.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = browser.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(body["session"], "cookie");
    let (pair, attributes) = set_cookie.split_once(';').unwrap();
    assert!(pair.starts_with("aiforge_session="), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(
            attributes.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert!(
        !attributes.contains("Secure"),
        "a plain-http public URL: {set_cookie}"
    );
    let cookie = pair.to_string();

    // An API client is answered as before.
    let (status, api) = login(&server, "ada@example.com", PASSWORD).await;
    assert_eq!(status, 200);
    let bearer = api["access_token"].as_str().unwrap().to_string();

    // Reads with the cookie alone.
    let me = client()
        .get(server.url("/api/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "ada");

    // Writes with the cookie need the header and a same-origin browser.
    let wallet = |n: u8| json!({"network": "ethereum", "address": format!("0x{:040x}", n)});
    for (n, pairs) in [
        (1, vec![("cookie", cookie.as_str()), ("origin", PUBLIC)]),
        (
            2,
            vec![
                ("cookie", cookie.as_str()),
                ("x-aiforge-csrf", "1"),
                ("origin", "http://evil.test"),
            ],
        ),
        (
            3,
            vec![
                ("cookie", cookie.as_str()),
                ("x-aiforge-csrf", "1"),
                ("sec-fetch-site", "same-site"),
            ],
        ),
        (
            4,
            vec![
                ("cookie", cookie.as_str()),
                ("x-aiforge-csrf", "1"),
                ("sec-fetch-site", "cross-site"),
                ("origin", PUBLIC),
            ],
        ),
        (
            5,
            vec![("cookie", cookie.as_str()), ("x-aiforge-csrf", "1")],
        ),
    ] {
        let refused = send_json(&server, "/api/wallets/connect", wallet(n), &pairs).await;
        assert_eq!(
            code_of(refused).await,
            (403, "csrf_refused".into()),
            "case {n}"
        );
    }
    let (_, wallets) = get(&server, "/api/wallets/my-wallets", Some(&bearer)).await;
    assert_eq!(
        wallets["wallets"],
        json!([]),
        "a refused write wrote nothing"
    );

    for (n, pairs) in [
        (
            6,
            vec![
                ("cookie", cookie.as_str()),
                ("x-aiforge-csrf", "1"),
                ("origin", PUBLIC),
            ],
        ),
        (
            7,
            vec![
                ("cookie", cookie.as_str()),
                ("x-aiforge-csrf", "1"),
                ("sec-fetch-site", "same-origin"),
            ],
        ),
    ] {
        let accepted = send_json(&server, "/api/wallets/connect", wallet(n), &pairs).await;
        assert_eq!(accepted.status(), 201, "case {n}");
    }
    // Bearer requests are not subject to the rule, even with a foreign Origin.
    let authorization = format!("Bearer {bearer}");
    let accepted = send_json(
        &server,
        "/api/wallets/connect",
        wallet(8),
        &[
            ("authorization", &authorization),
            ("origin", "http://evil.test"),
        ],
    )
    .await;
    assert_eq!(accepted.status(), 201);

    // The Free plan through the cookie session.
    let subscribed = send_json(
        &server,
        "/api/subscriptions/create",
        json!({"plan": "free"}),
        &[
            ("cookie", &cookie),
            ("x-aiforge-csrf", "1"),
            ("origin", PUBLIC),
        ],
    )
    .await;
    assert_eq!(subscribed.status(), 201);
    assert_eq!(
        subscribed.json::<Value>().await.unwrap()["subscription"]["active"]["plan"],
        "free"
    );

    // Sign-out from another origin is refused; from the app it clears the cookie.
    let logout = |pairs: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let mut request = client().post(server.url("/api/auth/logout"));
            for (name, value) in pairs {
                request = request.header(name, value);
            }
            request.send().await.unwrap()
        }
    };
    let refused = logout(vec![
        ("cookie", cookie.clone()),
        ("origin", "http://evil.test".into()),
    ])
    .await;
    assert_eq!(code_of(refused).await, (403, "csrf_refused".into()));
    let out = logout(vec![
        ("cookie", cookie.clone()),
        ("x-aiforge-csrf", "1".into()),
        ("origin", PUBLIC.into()),
    ])
    .await;
    assert_eq!(out.status(), 200);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("aiforge_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // A cookie that does not verify: 401 where a session is needed, anonymous where optional.
    let stale = "aiforge_session=not.a.token";
    let me = client()
        .get(server.url("/api/auth/me"))
        .header("cookie", stale)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    let browse = client()
        .get(server.url("/api/marketplace/0190a000-0000-7000-8000-000000000000"))
        .header("cookie", stale)
        .send()
        .await
        .unwrap();
    assert_eq!(
        browse.status(),
        404,
        "anonymous: the service is looked up, not refused"
    );
    server.stop();
}
