//! The OpenAPI document against the code: every route the router registers is in the document
//! and every operation of the document is a route (`routes_and_document_agree`), and the
//! document is well-formed OpenAPI 3.1 (every `$ref` resolves, path parameters match their
//! templates, operation ids are unique, money is never a number) and real tools accept it
//! (`fixtures/openapi`: a 3.1 validator and openapi-typescript).
//!
//! Why the routes are read from the source: axum's `Router` does not list its routes, and the
//! alternative, utoipa-axum's `OpenApiRouter`, still accepts plain undocumented `.route(..)`
//! calls, so it would need this same source check to stay honest, while rewriting `router()`
//! into it. So the router stays plain axum and this test reads every `.route("PATH", METHOD(..)
//! .METHOD(..))` call in `api/src` (comments and strings aside). It fails closed: a path that is
//! not a string literal, a method router it does not know (`any`, `on`, `MethodRouter::new`),
//! or a `.nest`/`.route_service`/`.nest_service` (whose routes it could not see) is an error
//! to fix here, never a route silently skipped. The other direction is also checked against
//! the running server: `tests/e2e_openapi.rs` calls every operation of the document.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];
/// Calls allowed on a method router besides the methods: they add no route.
const METHOD_ROUTER_CALLS: [&str; 3] = ["layer", "route_layer", "with_state"];
/// Router calls that would add routes this reader cannot see.
const HIDDEN_ROUTES: [&str; 3] = [".nest(", ".nest_service(", ".route_service("];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its comments; string and char literals kept as they are.
fn strip_comments(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            out.push(c);
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            if i < chars.len() {
                out.push('"');
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The (path, method) pairs of every `.route(..)` call in `code`; `file` names errors.
fn routes_in(code: &str, file: &str) -> Vec<(String, String)> {
    for hidden in HIDDEN_ROUTES {
        assert!(
            !code.contains(hidden),
            "{file}: `{hidden}` registers routes this test cannot read; list them with .route(..) or teach tests/openapi.rs"
        );
    }
    let text = code;
    let mut routes = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(".route(") {
        let start = from + found + ".route(".len();
        from = start;
        let rest = &text[start..];
        let rest_trimmed = rest.trim_start();
        assert!(
            rest_trimmed.starts_with('"'),
            "{file}: a .route(..) whose path is not a string literal: {}",
            rest_trimmed.chars().take(80).collect::<String>()
        );
        let literal = &rest_trimmed[1..];
        let end = literal.find('"').expect("an unterminated path literal");
        let path = literal[..end].to_string();
        // The method router: up to the `)` that closes `.route(`.
        let after = &literal[end + 1..];
        let after = after
            .trim_start()
            .strip_prefix(',')
            .unwrap_or_else(|| panic!("{file}: .route(\"{path}\" without a method router"));
        let mut depth = 0usize;
        let mut methods = Vec::new();
        let mut ident = String::new();
        let mut in_string = false;
        let mut escaped = false;
        for c in after.chars() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '(' | '[' | '{' => {
                    if depth == 0 && c == '(' {
                        let name = ident.clone();
                        if METHODS.contains(&name.as_str()) {
                            methods.push(name);
                        } else {
                            assert!(
                                METHOD_ROUTER_CALLS.contains(&name.as_str()),
                                "{file}: route \"{path}\": unknown call `{name}(..)` in its method router; \
                                 only {METHODS:?} (and {METHOD_ROUTER_CALLS:?}) are understood"
                            );
                        }
                    }
                    depth += 1;
                }
                ')' | ']' | '}' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                _ => {}
            }
            if c.is_alphanumeric() || c == '_' {
                ident.push(c);
            } else {
                ident.clear();
            }
        }
        assert!(
            !methods.is_empty(),
            "{file}: route \"{path}\" has no method"
        );
        for method in methods {
            routes.push((path.clone(), method));
        }
    }
    routes
}

/// Every (path, method) the router registers, read from `api/src`.
fn router_routes() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut routes = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let name = file.display().to_string();
        for route in routes_in(&strip_comments(&source), &name) {
            assert!(routes.insert(route.clone()), "{name}: {route:?} twice");
        }
    }
    routes
}

fn document() -> Value {
    let text = aiforge_api::openapi::document_text().expect("the document serializes");
    serde_json::from_str(text).expect("the document is JSON")
}

/// Every (path, method) the document has, with its operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) || method == "trace" {
                out.insert((path.clone(), method.clone()), operation.clone());
            }
        }
    }
    out
}

#[test]
fn routes_and_document_agree() {
    let routes = router_routes();
    let doc = document();
    let documented: BTreeSet<_> = operations(&doc).into_keys().collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes of the router missing from the OpenAPI document (add #[utoipa::path] to the handler and list it in openapi::ApiDoc): {missing:#?}\n\
         operations of the document that are no route: {extra:#?}"
    );
    // The reader found the router (a reader that finds nothing would agree with an empty
    // document).
    assert!(routes.len() > 90, "only {} routes read", routes.len());
}

#[test]
fn the_route_reader_reads_what_the_router_writes() {
    let code = r#"
        Router::new()
            .route("/a/{id}", get(h::get).put(h::put).delete(h::delete))
            .route(
                "/b",
                post(h::b).layer(DefaultBodyLimit::max(body_bytes_max)),
            )
            .route("/c", axum::routing::put(h::c))
            // .route("/commented", get(h::x))
            .fallback(|| async { "no such route" })
    "#;
    let routes = routes_in(&strip_comments(code), "example");
    let expected = [
        ("/a/{id}", "get"),
        ("/a/{id}", "put"),
        ("/a/{id}", "delete"),
        ("/b", "post"),
        ("/c", "put"),
    ];
    assert_eq!(
        routes,
        expected
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect::<Vec<_>>()
    );
}

#[test]
#[should_panic(expected = "unknown call `any(..)`")]
fn a_method_router_the_reader_does_not_know_fails_the_test() {
    routes_in(r#".route("/x", any(h::x))"#, "example");
}

#[test]
#[should_panic(expected = "cannot read")]
fn a_nested_router_fails_the_test() {
    routes_in(r#".nest("/x", other)"#, "example");
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Every property (name, schema) of every schema in `value`.
fn properties(value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, schema) in props {
                    out.push((name.clone(), schema.clone()));
                }
            }
            map.values().for_each(|v| properties(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| properties(v, out)),
        _ => {}
    }
}

fn has_type(schema: &Value, wanted: &str) -> bool {
    match &schema["type"] {
        Value::String(t) => t == wanted,
        Value::Array(types) => types.iter().any(|t| t == wanted),
        _ => false,
    }
}

#[test]
fn the_document_is_well_formed_openapi_3_1() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // Every $ref points into this document's components and resolves.
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    assert!(!all_refs.is_empty());
    for r in &all_refs {
        let parts: Vec<&str> = r.split('/').collect();
        assert!(
            parts.len() == 4 && parts[0] == "#" && parts[1] == "components",
            "a $ref outside the components: {r}"
        );
        assert!(
            doc["components"][parts[2]][parts[3]].is_object(),
            "a $ref that does not resolve: {r}"
        );
    }

    let schemes: BTreeSet<String> = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes")
        .keys()
        .cloned()
        .collect();
    let tags: BTreeSet<String> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let mut operation_ids = BTreeSet::new();
    for ((path, method), operation) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(
            operation_ids.insert(id.to_string()),
            "{at}: operationId {id} twice"
        );
        let op_tags = operation["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: no tag"));
        for tag in op_tags {
            assert!(
                tags.contains(tag.as_str().unwrap()),
                "{at}: undeclared tag {tag}"
            );
        }
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{at}: no success answer"
        );
        assert!(responses.contains_key("default"), "{at}: no error answer");
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(
                    schemes.contains(scheme),
                    "{at}: unknown security scheme {scheme}"
                );
            }
        }
        // Path parameters and the path's template name the same things.
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        let mut declared = BTreeSet::new();
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] == "path" {
                assert_eq!(parameter["required"], true, "{at}: optional path parameter");
                declared.insert(parameter["name"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(template, declared, "{at}: path parameters");
    }

    // Money is a decimal string, never a number: the only numbers are the sampling knobs.
    let usdt = &doc["components"]["schemas"]["Usdt"];
    assert!(
        has_type(usdt, "string") && usdt["pattern"].is_string(),
        "{usdt}"
    );
    let mut props = Vec::new();
    properties(&doc, &mut props);
    let numbers: BTreeSet<String> = props
        .into_iter()
        .filter(|(_, schema)| has_type(schema, "number"))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        numbers,
        BTreeSet::from(["temperature".to_string(), "top_p".to_string()]),
        "properties typed as JSON numbers (money must be a decimal string)"
    );
}

#[tokio::test]
async fn the_docs_page_runs_without_inline_script() {
    use axum::response::IntoResponse;
    let page = aiforge_api::openapi::docs::page().await.into_response();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let body = axum::body::to_bytes(page.into_body(), usize::MAX)
        .await
        .unwrap();
    let html = String::from_utf8(body.to_vec()).unwrap();
    // Every script has a src and no body; no inline handlers or styles.
    for tag in html.split("<script").skip(1) {
        let (attrs, rest) = tag.split_once('>').unwrap();
        assert!(attrs.contains("src="), "an inline script: <script{attrs}>");
        assert!(rest.starts_with("</script>"), "a script with a body");
    }
    assert!(!html.contains("<style") && !html.contains(" style="));
    let handlers = html.split(" on").skip(1).filter(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert_eq!(handlers.count(), 0, "an inline event handler");
    // What the page loads (relative to /api/docs) are routes of the document.
    let documented: BTreeSet<String> = operations(&document())
        .into_keys()
        .map(|(path, _)| path)
        .collect();
    for wanted in ["docs/app.js", "docs/app.css", "openapi.json"] {
        assert!(html.contains(wanted), "the page does not load {wanted}");
        assert!(documented.contains(&format!("/api/{wanted}")), "{wanted}");
    }
}

/// Real tools accept the document (`fixtures/openapi/check.mjs`): swagger-parser validates it as
/// OpenAPI 3.1 and resolves every `$ref`, and openapi-typescript, what the web app's client
/// types are generated with, turns it into TypeScript where `Usdt` is a string.
#[test]
fn real_openapi_tools_accept_the_document() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/openapi");
    let installed = ["openapi-typescript", "@apidevtools/swagger-parser"]
        .iter()
        .all(|package| dir.join("node_modules").join(package).exists());
    if !installed {
        aiforge_commands::testing::skip_or_fail(
            "OpenAPI tools",
            "fixtures/openapi/node_modules missing; run `npm ci --prefix fixtures/openapi`",
        );
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), aiforge_api::openapi::document_text().unwrap()).unwrap();
    let output = match std::process::Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(file.path())
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            aiforge_commands::testing::skip_or_fail("node", &format!("cannot run node: {e}"));
            return;
        }
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["openapi"], "3.1.0");
    assert_eq!(summary["usdt_is_string"], true, "{summary}");
    let paths = document()["paths"].as_object().unwrap().len();
    assert_eq!(summary["paths"], paths, "{summary}");
}

#[test]
fn aiforge_openapi_prints_the_document() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_aiforge"))
        .arg("openapi")
        .current_dir(data.path())
        .env("AIFORGE_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, document());
}
