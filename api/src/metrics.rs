//! Process-wide counters for `/metrics`, kept as atomics: the hot path pays one relaxed add.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Responses by status class 1xx..5xx.
pub static HTTP_RESPONSES: [AtomicU64; 5] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

pub async fn count_responses(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let class = (response.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    HTTP_RESPONSES[class].fetch_add(1, Ordering::Relaxed);
    response
}
