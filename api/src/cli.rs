//! The `aiforge` command line: `serve` (the default), `migrate`, `events export`,
//! `projections status|rebuild`, `revenue close`, `audit verify|replay`, `payouts run|list`, `openapi`. Data goes to stdout, logs to stderr.

use std::io::Write;
use std::path::PathBuf;

use aiforge_commands::bus::redacted;
use aiforge_commands::{Database, LogPosition};
use aiforge_domain::revenue_book::{Month, MonthDistribution};
use aiforge_projections::distribution;
use aiforge_projections::Projector;
use clap::{Parser, Subcommand};

use crate::settings::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "aiforge",
    version,
    about = "AIForge Network: marketplace, gateway and ledger"
)]
pub struct Cli {
    /// Data directory (default ./aiforge-data or AIFORGE_DATA_DIR).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform (the default command).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        bind: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// The event log, for auditors.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Read models built from the event log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Checks for auditors.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The monthly revenue distribution.
    Revenue {
        #[command(subcommand)]
        command: RevenueCommand,
    },
    /// Money out: payouts of payables to payees' wallets.
    Payouts {
        #[command(subcommand)]
        command: PayoutsCommand,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (JSON) to stdout.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum PayoutsCommand {
    /// One payout pass now: follow transactions in progress, make payouts after the latest
    /// close, sign, record and send those awaiting payment.
    Run,
    /// Every payout: id, state, amount, wallet, transaction.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RevenueCommand {
    /// Close a month that has ended (YYYY-MM): distribute its subscription pool by tokens and
    /// group models' revenue by their splits, and record it as one `MonthClosed` event.
    Close { month: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain over the whole event log and compare it with the recorded
    /// seals; exits 1 naming the first altered position.
    Verify,
    /// Recompute a month's distribution from the raw events only (an export file, or the live
    /// store) and compare it with the recorded close; exits 1 when they differ.
    Replay {
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// A file written by `aiforge events export` (default: the live store).
        #[arg(long)]
        input: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write events as JSON lines in global order (secret payloads withheld).
    Export {
        /// First global position to include.
        #[arg(long)]
        from: Option<i64>,
        /// Last global position to include.
        #[arg(long)]
        to: Option<i64>,
        /// Only events recorded at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events recorded before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Checkpoint and lag of every projection.
    Status,
    /// Empty a projection's views and replay the whole log into them (all when no name given).
    Rebuild { name: Option<String> },
}

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

const EXPORT_BATCH_EVENTS: i64 = 5000;

fn normalize_time(input: &str) -> Result<String, Box<dyn std::error::Error>> {
    let at = time::OffsetDateTime::parse(input, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("'{input}' is not an RFC 3339 time: {e}"))?;
    Ok(aiforge_commands::clock::rfc3339(at))
}

pub async fn export(
    db: &Database,
    from: Option<i64>,
    to: Option<i64>,
    since: Option<String>,
    until: Option<String>,
    out: &mut dyn Write,
) -> Result<u64, Box<dyn std::error::Error>> {
    let since = since.as_deref().map(normalize_time).transpose()?;
    let until = until.as_deref().map(normalize_time).transpose()?;
    let mut at = match from {
        None => LogPosition::START,
        Some(position) => {
            let found = db
                .log_position_of(position)
                .await?
                .ok_or_else(|| format!("no event at position {position}"))?;
            // Just before it, so the range includes it.
            LogPosition {
                tx: found.tx,
                position: found.position - 1,
            }
        }
    };
    let stop = match to {
        None => None,
        Some(position) => Some(
            db.log_position_of(position)
                .await?
                .ok_or_else(|| format!("no event at position {position}"))?,
        ),
    };
    let mut written = 0u64;
    loop {
        let batch = db.read_log_after(at, EXPORT_BATCH_EVENTS).await?;
        let Some(last) = batch.last() else { break };
        at = last.log_position();
        for event in &batch {
            if stop.is_some_and(|stop| event.log_position() > stop) {
                out.flush()?;
                return Ok(written);
            }
            let in_window = since.as_ref().is_none_or(|s| event.recorded_at >= *s)
                && until.as_ref().is_none_or(|u| event.recorded_at < *u);
            if in_window {
                serde_json::to_writer(&mut *out, &redacted(event))?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

pub async fn run(cli: Cli) -> CliResult {
    let mut settings = Settings::load()?;
    if let Some(dir) = cli.data_dir {
        settings.data_dir = dir;
    }
    match cli.command.unwrap_or(Command::Serve { bind: None }) {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                settings.set_bind(&bind)?;
            }
            crate::serve(settings).await?;
        }
        Command::Migrate => {
            let db = crate::open_database(&settings).await?;
            println!("migrations applied ({})", db.engine_name());
            db.close().await;
        }
        Command::Events {
            command:
                EventsCommand::Export {
                    from,
                    to,
                    since,
                    until,
                    output,
                },
        } => {
            let db = crate::open_database(&settings).await?;
            let written = match output {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    export(&db, from, to, since, until, &mut file).await?
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut lock = std::io::BufWriter::new(stdout.lock());
                    export(&db, from, to, since, until, &mut lock).await?
                }
            };
            tracing::info!(events = written, "export finished");
            db.close().await;
        }
        Command::Revenue {
            command: RevenueCommand::Close { month },
        } => {
            let month: Month = month.parse()?;
            let db = crate::open_database(&settings).await?;
            let clock: std::sync::Arc<dyn aiforge_commands::Clock> =
                std::sync::Arc::new(aiforge_commands::SystemClock);
            let book = aiforge_commands::Executor::new(
                db.clone(),
                clock.clone(),
                aiforge_domain::revenue_book::RevenueBookServices,
            );
            let id = format!("cli:revenue-close:{month}");
            let meta = aiforge_commands::CommandMeta {
                command_id: id.clone(),
                request_hash: id,
                actor: Some("cli".into()),
                request_id: None,
            };
            let started = std::time::Instant::now();
            let closed = distribution::close(&book, &clock, month, "cli", &meta).await;
            db.close().await;
            let closed = closed?;
            print_distribution(&closed.distribution);
            println!("closed {month} in {:.3}s", started.elapsed().as_secs_f64());
        }
        Command::Audit {
            command: AuditCommand::Replay { month, input },
        } => {
            let month: Month = month.parse()?;
            let started = std::time::Instant::now();
            let replay = match input {
                Some(path) => {
                    let open = move || -> std::io::Result<Box<dyn std::io::BufRead>> {
                        Ok(Box::new(std::io::BufReader::with_capacity(
                            1 << 20,
                            std::fs::File::open(&path)?,
                        )))
                    };
                    distribution::replay_export(&open, month)?
                }
                None => {
                    let db = crate::open_database(&settings).await?;
                    let replay = distribution::replay_live(&db, month).await;
                    db.close().await;
                    replay?
                }
            };
            print_distribution(&replay.computed);
            eprintln!("replayed in {:.3}s", started.elapsed().as_secs_f64());
            match &replay.recorded {
                None => println!("{month} has no recorded close: nothing to compare (the above is what a close now would record)"),
                Some(recorded) if replay.matches() => {
                    println!("MATCHES the recorded close of {month} (digest {})", recorded.digest);
                }
                Some(recorded) => {
                    println!(
                        "DIFFERS from the recorded close of {month}: recorded digest {}, replayed {}",
                        recorded.digest, replay.computed.digest
                    );
                    for line in differences(recorded, &replay.computed) {
                        println!("  {line}");
                    }
                    std::process::exit(1);
                }
            }
        }
        Command::Payouts { command } => {
            let db = crate::open_database(&settings).await?;
            let projector = Projector::new(db.clone(), aiforge_projections::all());
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let projecting = {
                let projector = projector.clone();
                tokio::spawn(async move { projector.run(stopped).await })
            };
            let views: std::sync::Arc<dyn aiforge_commands::passes::Views> =
                std::sync::Arc::new(aiforge_projections::views::ProjectedViews {
                    db: db.clone(),
                    projector: projector.clone(),
                });
            let result: CliResult = async {
                match command {
                    PayoutsCommand::Run => {
                        let clock: std::sync::Arc<dyn aiforge_commands::Clock> =
                            std::sync::Arc::new(aiforge_commands::SystemClock);
                        let payouts = crate::payouts_of(&settings, &db, clock, views).await?;
                        let report = payouts.run_once().await?;
                        println!("{}", serde_json::to_string(&report)?);
                    }
                    PayoutsCommand::List => {
                        views.settle().await;
                        let rows = aiforge_projections::payouts::list(
                            &db,
                            aiforge_projections::payouts::PayoutFilter::All,
                            i64::MAX,
                        )
                        .await?;
                        for p in rows {
                            println!(
                                "{}\t{}\t{}\t{}:{}\t{}",
                                p.payout_id,
                                p.state,
                                aiforge_projections::revenue::usdt_text(p.amount_micros),
                                p.network,
                                p.address,
                                p.tx_hash.unwrap_or_default()
                            );
                        }
                    }
                }
                Ok(())
            }
            .await;
            let _ = stop.send(true);
            let _ = projecting.await;
            db.close().await;
            result?;
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let db = crate::open_database(&settings).await?;
            // Seal what the running server has not sealed yet, then check everything.
            let projector = Projector::new(db.clone(), aiforge_projections::all());
            projector
                .catch_up(&aiforge_projections::seals::SealsProjection)
                .await?;
            let verdict = aiforge_projections::seals::verify(&db).await?;
            db.close().await;
            match verdict {
                aiforge_projections::seals::Verdict::Intact { sealed } => {
                    println!("event log intact: {sealed} events match their seals");
                }
                aiforge_projections::seals::Verdict::Broken { seq, position } => {
                    println!(
                        "event log ALTERED: the event at global position {position} (#{seq} in log order) does not match its seal"
                    );
                    std::process::exit(1);
                }
            }
        }
        Command::Projections { command } => {
            let db = crate::open_database(&settings).await?;
            let projector = Projector::new(db.clone(), aiforge_projections::all());
            match command {
                ProjectionsCommand::Status => {
                    println!(
                        "{:<16} {:>14} {:>14} {:>10}",
                        "projection", "checkpoint", "head", "behind"
                    );
                    for s in projector.status().await? {
                        println!(
                            "{:<16} {:>14} {:>14} {:>10}",
                            s.name, s.checkpoint.position, s.head.position, s.behind
                        );
                    }
                }
                ProjectionsCommand::Rebuild { name } => {
                    let targets = match name {
                        Some(name) => vec![projector.find(&name)?],
                        None => projector.projections().to_vec(),
                    };
                    for projection in targets {
                        let started = std::time::Instant::now();
                        let at = projector.rebuild(projection.as_ref()).await?;
                        println!(
                            "rebuilt {} up to position {} in {:.3}s",
                            projection.name(),
                            at.position,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            db.close().await;
        }
        Command::Openapi => {
            // Made from the code alone: no database is opened.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", crate::openapi::document_text()?)?;
        }
    }
    Ok(())
}

fn print_distribution(d: &MonthDistribution) {
    println!(
        "month {} (log read through position {}, tx {})",
        d.month, d.through.position, d.through.tx
    );
    println!(
        "subscription pool {} (distributed {}), tokens {}, group API revenue {}, usage events {}, payments {}",
        d.pool_total, d.pool_distributed, d.tokens_total, d.group_api_total, d.usage_events, d.payments
    );
    println!(
        "{:<38} {:>14} {:>12} {:>18} {:>18}",
        "model", "tokens", "usage %", "pool share", "group API"
    );
    for m in &d.models {
        println!(
            "{:<38} {:>14} {:>12} {:>18} {:>18}",
            m.model_id, m.tokens, m.usage_percent, m.pool_amount, m.group_api_amount
        );
    }
    for p in &d.payouts {
        println!(
            "payout {:<38} from {:<38} {:>10} {:>18}",
            p.user_id,
            p.model_id,
            serde_json::to_value(p.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            p.amount
        );
    }
    for c in &d.corrections {
        println!(
            "correction from {}: {:?} model {} amount {} tokens {}",
            c.from_month,
            c.kind,
            c.model_id.as_deref().unwrap_or("-"),
            c.amount
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            c.tokens
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    println!("input digest {}", d.input_digest);
    println!("digest {}", d.digest);
}

/// The top-level fields that differ between two distributions, for the auditor.
pub(crate) fn differences(
    recorded: &MonthDistribution,
    replayed: &MonthDistribution,
) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (
        serde_json::to_value(recorded),
        serde_json::to_value(replayed),
    ) else {
        return Vec::new();
    };
    a.iter()
        .filter(|(key, value)| b.get(*key) != Some(*value))
        .map(|(key, value)| {
            let shown = |v: &serde_json::Value| {
                let text = v.to_string();
                match text.char_indices().nth(200) {
                    Some((cut, _)) => format!("{}…", &text[..cut]),
                    None => text,
                }
            };
            format!(
                "{key}: recorded {} / replayed {}",
                shown(value),
                b.get(key).map(shown).unwrap_or_default()
            )
        })
        .collect()
}
