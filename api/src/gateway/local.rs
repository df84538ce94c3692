//! The in-process node of `aiforge serve` (the embedded default) and the demo it seeds.
//!
//! The node loads a GGUF model with this build's GGUF engine (candle, or llama.cpp with the
//! `llama` feature) and serves it for every platform model with the same content (SHA-256). With the demo on, start-up makes sure the model is in
//! the marketplace (a demo account uploads and publishes it and offers a free service), and
//! prints a fresh API key for it: the README's first `curl` needs nothing else.

use std::path::PathBuf;
use std::sync::Arc;

use aiforge_commands::CommandMeta;
use aiforge_domain::model::{BlobRef, ModelMetadata, ModelSource};
use aiforge_domain::service::{Pricing, RateLimits, ServiceDetails};
use aiforge_domain::Usdt;
use aiforge_inference::fetch::{GgufOptions, ServedSource};
use aiforge_inference::{Engine, UpstreamConfig, UpstreamEngine};
use sha2::{Digest, Sha256};

use super::nodes::LocalNodes;
use crate::settings::{LocalNode, Settings};
use crate::AppState;

pub const LOCAL_NODE_ID: &str = "local";
const DEMO_EMAIL: &str = "demo@aiforge.local";
const DEMO_USERNAME: &str = "aiforge-demo";

/// A loaded local model: its file's SHA-256 and the engine.
pub struct LocalModel {
    pub path: PathBuf,
    pub sha256: String,
    pub engine: Arc<dyn Engine>,
}

/// Fetches (when needed) and loads the configured local model; `None` when the node is off.
pub async fn load(settings: &Settings) -> Result<Option<LocalModel>, String> {
    let path = match &settings.local_node {
        LocalNode::Off | LocalNode::Auto => return Ok(None),
        LocalNode::Upstream { base_url, model } => {
            let card =
                format!("aiforge upstream model card\nbase_url: {base_url}\nmodel: {model}\n");
            let sha256 = hex::encode(Sha256::digest(card.as_bytes()));
            let path = settings
                .data_dir
                .join(format!("upstream-{}.card", &sha256[..16]));
            tokio::fs::write(&path, card)
                .await
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            let engine = UpstreamEngine::new(UpstreamConfig::new(base_url.clone(), model.clone()))
                .map_err(|e| format!("upstream {base_url}: {e}"))?;
            tracing::info!(%base_url, %model, "local node serves an upstream");
            return Ok(Some(LocalModel {
                path,
                sha256,
                engine: Arc::new(engine),
            }));
        }
        LocalNode::File(path) => ServedSource::File(path.clone()),
        LocalNode::Named(model) => ServedSource::Named(*model),
    };
    let served = aiforge_inference::fetch::load_served(path, GgufOptions::default())
        .await
        .map_err(|e| aiforge_commands::error_chain(&e))?;
    Ok(Some(LocalModel {
        path: served.path,
        sha256: served.sha256,
        engine: served.engine,
    }))
}

pub fn serve(nodes: &LocalNodes, model: &LocalModel) {
    nodes.serve_content(&model.sha256, model.engine.clone());
}

/// The fixed command of one step of the demo: every start finds the same account, model,
/// service and subscription, because a command id seen before returns its first outcome (these
/// ids are not UUIDv7s, so `CommandMeta::is_generated` never skips that look-up).
fn meta(step: &str) -> CommandMeta {
    let id = format!("demo:{step}");
    CommandMeta {
        request_hash: id.clone(),
        command_id: id,
        actor: None,
        request_id: None,
    }
}

/// What the demo printed: the model id and a fresh key.
pub struct Demo {
    pub model_id: String,
    pub service_id: String,
    pub api_key: String,
}

/// Makes sure the demo exists and returns a fresh key for it.
pub async fn seed_demo(state: &AppState, model: &LocalModel) -> Result<Demo, String> {
    let err = |step: &'static str| move |e: &dyn std::fmt::Display| format!("demo {step}: {e}");
    let password = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let user_id = state
        .accounts
        .register(DEMO_EMAIL, DEMO_USERNAME, &password, &meta("account"))
        .await
        .map_err(|e| err("account")(&e))?
        .aggregate_id;
    let blob = {
        let mut file = tokio::fs::File::open(&model.path)
            .await
            .map_err(|e| err("model file")(&e))?;
        state
            .blobs
            .put(&mut file, u64::MAX)
            .await
            .map_err(|e| err("model upload")(&e))?
    };
    let name = model
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "local-model".into());
    let servability = crate::routes::models::servability(state, &blob)
        .await
        .map_err(|e| format!("demo servability: {e:?}"))?;
    let market = &state.marketplace;
    let model_id = market
        .upload(
            &user_id,
            None,
            ModelMetadata {
                name: name.clone(),
                description: "Served by the local node of this aiforge (the demo).".into(),
                tags: vec!["demo".into(), "gguf".into()],
            },
            BlobRef {
                sha256: blob.sha256.clone(),
                cid: blob.cid.clone(),
                size_bytes: blob.size_bytes,
                backend: state.blobs.backend().to_string(),
            },
            ModelSource::Upload {
                filename: format!("{name}.gguf"),
            },
            servability,
            &meta(&format!("model:{}", &blob.sha256[..16])),
        )
        .await
        .map_err(|e| err("model")(&e))?
        .aggregate_id;
    market
        .publish(
            &model_id,
            &user_id,
            None,
            &meta(&format!("publish:{}", &blob.sha256[..16])),
        )
        .await
        .map_err(|e| err("publish")(&e))?;
    let service_id = market
        .create_service(
            &user_id,
            &model_id,
            ServiceDetails {
                name: format!("{name} (demo)"),
                description: "A free service on the local node's model.".into(),
            },
            Pricing::Monthly {
                price_per_month: Usdt::ZERO,
            },
            RateLimits::default(),
            true,
            &meta(&format!("service:{}", &blob.sha256[..16])),
        )
        .await
        .map_err(|e| err("service")(&e))?
        .aggregate_id;
    // A data dir from before plans existed holds the demo's service without the flag (its
    // create command is replayed above): include it, so a Free user can chat with the model.
    if !market
        .service(&service_id)
        .await
        .map_err(|e| err("service")(&e))?
        .included_in_plans
    {
        market
            .update_service(
                &service_id,
                &user_id,
                None,
                None,
                None,
                None,
                Some(true),
                &meta(&format!("service-in-plans:{}", &blob.sha256[..16])),
            )
            .await
            .map_err(|e| err("service in plans")(&e))?;
    }
    let subscribed = market
        .subscribe(
            &user_id,
            &service_id,
            None,
            Usdt::ZERO,
            &meta(&format!("subscribe:{}", &blob.sha256[..16])),
        )
        .await
        .map_err(|e| err("subscribe")(&e))?;
    // The key of a replayed subscription was shown at its first start only: make a new one.
    let api_key = if subscribed.outcome.replayed {
        market
            .regenerate_key(
                &subscribed.subscription_id,
                &user_id,
                &CommandMeta::generated(Some(user_id.clone())),
            )
            .await
            .map_err(|e| err("key")(&e))?
            .1
    } else {
        subscribed.api_key
    };
    Ok(Demo {
        model_id,
        service_id,
        api_key,
    })
}
