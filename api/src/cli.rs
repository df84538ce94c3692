//! The `aiforge` command line: `serve` (the default), `migrate`, `events export`,
//! `projections status|rebuild`. Data goes to stdout, logs to stderr.

use std::io::Write;
use std::path::PathBuf;

use aiforge_commands::bus::redacted;
use aiforge_commands::{Database, LogPosition};
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
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain over the whole event log and compare it with the recorded
    /// seals; exits 1 naming the first altered position.
    Verify,
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
    }
    Ok(())
}
