//! `picture-dev`: the local stack's own tool.
//!
//! - `serve`: every function's routes on one port (the dev gateway), plus the
//!   dev key set at `/dev/jwks.json`, the playground at `/` and the API reference
//!   at `/docs` (playground.rs), and the reconciler on the template's
//!   schedule (`RECONCILE_INTERVAL_SECONDS`, 300; 0 turns it off);
//! - `migrate`: applies pending migrations to `DATABASE_URL`;
//! - `setup`: creates the images bucket and the runtime table (with its TTL) in the AWS emulator;
//! - `token USER_ID`: prints a token signed by the local dev key (made on first use);
//! - `credits USER_ID AMOUNT`: grants credits on the built-in ledger;
//! - `retry-captures`: sends external credit captures that did not go through;
//! - `reconcile`: one run of the reconciler (what the scheduled function does);
//! - `refund GENERATION_ID`: gives a captured generation's credits back;
//! - `audit [--since DATE|RFC3339] [--user USER_ID]`: checks the stores' invariants,
//!   prints every violation and exits 1 if there is any (2 if it cannot run);
//! - `usage [--since DATE|RFC3339] [--until DATE|RFC3339] [--format table|json]`:
//!   generations, outcomes, credits, predict time and estimated provider cost per model.
//! - `backfill-thumbnails [--batch N] [--user USER_ID]`: gives images stored without a
//!   thumbnail one (and a blurhash), N (32) rows per transaction; safe to repeat or run
//!   concurrently.
//!
//! Settings come from the environment (`make` loads `.dev/local.env`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use picture::{AppState, auth::devkey::DevKey};
use tracing::Instrument;

mod playground;
mod usage;

/// `--flag value` pairs of a command's arguments, each flag one of `known`.
fn options<'a>(command: &str, args: &[&'a str], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>> {
    args.chunks(2)
        .map(|pair| match (pair[0], pair.get(1)) {
            (flag, Some(value)) if known.contains(&flag) => Ok((flag, *value)),
            (flag, Some(_)) => bail!("{command}: unknown option {flag}"),
            (flag, None) => bail!("{command}: {flag} needs a value"),
        })
        .collect()
}

const KID: &str = "picture-dev";

fn dev_dir() -> PathBuf {
    PathBuf::from(std::env::var("DEV_DIR").unwrap_or_else(|_| ".dev".into()))
}

/// Loads the dev signing key, making it (and its JWKS file) on first use.
fn dev_key(dir: &Path) -> Result<DevKey> {
    let key_file = dir.join("jwt-dev.key");
    let key = match std::fs::read_to_string(&key_file) {
        Ok(b64) => {
            DevKey::from_pkcs8(STANDARD.decode(b64.trim())?, KID).map_err(anyhow::Error::msg)?
        }
        Err(_) => {
            std::fs::create_dir_all(dir)?;
            let key = DevKey::generate(KID);
            std::fs::write(&key_file, STANDARD.encode(key.pkcs8()))?;
            key
        }
    };
    std::fs::write(dir.join("jwks.json"), key.jwks().to_string())?;
    Ok(key)
}

async fn serve() -> Result<()> {
    // Traces too when the OTEL_* variables ask for them, as on Lambda.
    picture::telemetry::init();
    let metrics =
        picture::telemetry::init_local_metrics().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let state = AppState::from_env().await?;
    let dir = dev_dir();
    let key = dev_key(&dir)?;
    let jwks_file = dir.join("jwks.json");
    schedule_reconciler(state.clone(), metrics);
    let app = picture::api::all(state).route(
        "/dev/jwks.json",
        axum::routing::get(move || {
            let file = jwks_file.clone();
            async move {
                let body = tokio::fs::read_to_string(file)
                    .await
                    .unwrap_or_else(|_| r#"{"keys":[]}"#.into());
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    );
    // The playground, the API reference and the dev token (playground.rs).
    let app = app.merge(playground::routes(key));
    // As on Lambda, the metrics of each request go to stdout as EMF once it is answered.
    let app = app.layer(axum::middleware::map_response(
        move |res: axum::response::Response| async move {
            flush(metrics);
            res
        },
    ));
    let port = std::env::var("PORT").unwrap_or_else(|_| "3006".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .with_context(|| format!("port {port}"))?;
    eprintln!("picture: serving every function on http://127.0.0.1:{port}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    picture::otel::flush().await;
    Ok(())
}

/// Writes the collected metrics to stdout as EMF documents.
fn flush(metrics: &metrics_cloudwatch_embedded::Collector) {
    if let Err(e) = metrics.flush(std::io::stdout().lock()) {
        tracing::warn!(error = %e, "metrics not flushed");
    }
}

/// Runs the reconciler every `RECONCILE_INTERVAL_SECONDS`, as EventBridge does on
/// AWS (the first run one interval after start); `0` turns it off. Its metrics
/// are flushed after each run.
fn schedule_reconciler(state: AppState, metrics: &'static metrics_cloudwatch_embedded::Collector) {
    let every = state.cfg.reconcile_interval;
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            ticks.tick().await;
            // The run logs its report; an error is logged and the next tick tries again.
            let span = picture::otel::invocation_span("reconcile", "timer", None);
            if let Err(e) = picture::reconcile::sweep(&state).instrument(span).await {
                tracing::warn!(error = %e, "scheduled reconciler run failed");
            }
            flush(metrics);
        }
    });
}

async fn setup() -> Result<()> {
    let state = AppState::from_env().await?;
    let s3 = state.storage.client().await;
    let bucket = &state.cfg.images_bucket;
    if s3.head_bucket().bucket(bucket).send().await.is_err() {
        let region = s3
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let mut req = s3.create_bucket().bucket(bucket);
        if region != "us-east-1" && !region.is_empty() {
            let location = aws_sdk_s3::types::BucketLocationConstraint::from(region.as_str());
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(location)
                    .build(),
            );
        }
        req.send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
        eprintln!("setup: created bucket {bucket}");
    }
    runtime_table(&state).await
}

/// Creates the runtime table as template.yaml declares it (`pk` + `sk`, TTL on `expiresAt`).
async fn runtime_table(state: &AppState) -> Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let db = state.records.client().await;
    let table = state.records.name();
    let fail = |e: String| anyhow::anyhow!("runtime table {table}: {e}");
    if db.describe_table().table_name(table).send().await.is_ok() {
        return Ok(());
    }
    let mut create = db
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()?,
            );
    }
    create
        .send()
        .await
        .map_err(|e| fail(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
    db.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expiresAt")
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .map_err(|e| fail(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
    eprintln!("setup: created table {table} (TTL on expiresAt)");
    Ok(())
}

/// `audit`: prints every violation and a summary; exit code 1 if there is any,
/// 2 if the audit could not run.
async fn audit(args: &[&str]) -> Result<()> {
    if let Err(e) = run_audit(args).await {
        eprintln!("audit: {e:#}");
        std::process::exit(2);
    }
    Ok(())
}

async fn run_audit(args: &[&str]) -> Result<()> {
    let mut filter = picture::audit::Filter::default();
    for (flag, value) in options("audit", args, &["--since", "--user"])? {
        match flag {
            "--since" => {
                filter.since = Some(picture::audit::parse_since(value).map_err(anyhow::Error::msg)?)
            }
            _ => filter.user = Some(uuid::Uuid::parse_str(value).context("--user must be a uuid")?),
        }
    }
    let state = AppState::from_env().await?;
    let report = picture::audit::inspect(&state, &filter).await?;
    for v in &report.violations {
        println!("{v}");
    }
    let c = report.checked;
    println!(
        "audit: {} generations, {} objects, {} ledger accounts, {} free quotas checked; {} violations",
        c.generations,
        c.objects,
        c.accounts,
        c.quotas,
        report.violations.len()
    );
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// `backfill-thumbnails [--batch N] [--user USER_ID]`: prints what was done.
async fn backfill_thumbnails(args: &[&str]) -> Result<()> {
    let (mut batch, mut user) = (32, None);
    for (flag, value) in options("backfill-thumbnails", args, &["--batch", "--user"])? {
        match flag {
            "--batch" => {
                batch = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .context("--batch must be an integer from 1 to 1000")?
            }
            _ => user = Some(uuid::Uuid::parse_str(value).context("--user must be a uuid")?),
        }
    }
    picture::telemetry::init_logging();
    let state = AppState::from_env().await?;
    let sel = picture::thumbnail::Selection {
        user,
        ..Default::default()
    };
    let report = picture::thumbnail::backfill(&state, batch, sel).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve"] => serve().await,
        ["migrate"] => {
            let url = std::env::var("DATABASE_URL").context("DATABASE_URL is required")?;
            let ca = std::env::var("DATABASE_CA_FILE").ok();
            let applied = picture::db::migrate(&url, ca.as_deref()).await?;
            eprintln!(
                "migrate: {} applied ({})",
                applied.len(),
                applied.join(", ")
            );
            Ok(())
        }
        ["setup"] => setup().await,
        ["token", user] => {
            let user = uuid::Uuid::parse_str(user).context("USER_ID must be a uuid")?;
            let issuer = std::env::var("JWT_ISSUER").unwrap_or_else(|_| "picture-dev".into());
            let audience = std::env::var("JWT_AUDIENCE").unwrap_or_else(|_| "manacore".into());
            let key = dev_key(&dev_dir())?;
            println!(
                "{}",
                key.token(
                    user,
                    issuer.split(',').next().unwrap_or_default(),
                    &audience,
                    24 * 3600
                )
            );
            Ok(())
        }
        ["credits", user, amount] => {
            let user = uuid::Uuid::parse_str(user).context("USER_ID must be a uuid")?;
            let amount: i64 = amount
                .parse()
                .ok()
                .filter(|a| *a > 0)
                .context("AMOUNT must be a positive integer")?;
            let state = AppState::from_env().await?;
            let mut db = state.db.get().await?;
            let tx = db.transaction().await?;
            let b =
                picture::db::ledger::grant(&*tx, user, amount, "granted with make credits").await?;
            tx.commit().await?;
            println!(
                "user {user}: balance {} (earned {}, spent {})",
                b.balance, b.total_earned, b.total_spent
            );
            Ok(())
        }
        ["reconcile"] => {
            picture::telemetry::init_logging();
            let state = AppState::from_env().await?;
            let report = picture::reconcile::sweep(&state).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        ["retry-captures"] => {
            let state = AppState::from_env().await?;
            let (settled, open) = state
                .credits
                .retry_captures(&**state.db.get().await?, 500)
                .await?;
            println!("captures: {settled} settled, {open} still open");
            Ok(())
        }
        ["refund", generation] => {
            let generation =
                uuid::Uuid::parse_str(generation).context("GENERATION_ID must be a uuid")?;
            let state = AppState::from_env().await?;
            let mut db = state.db.get().await?;
            let tx = db.transaction().await?;
            let amount = state.credits.refund(&*tx, generation).await?;
            tx.commit().await?;
            println!("generation {generation}: {amount} credits refunded");
            Ok(())
        }
        ["audit", rest @ ..] => audit(rest).await,
        ["usage", rest @ ..] => usage::run(rest).await,
        ["backfill-thumbnails", rest @ ..] => backfill_thumbnails(rest).await,
        _ => bail!(
            "usage: picture-dev serve | migrate | setup | token USER_ID | credits USER_ID AMOUNT | reconcile | retry-captures | refund GENERATION_ID | audit [--since DATE] [--user USER_ID] | usage [--since DATE] [--until DATE] [--format table|json] | backfill-thumbnails [--batch N] [--user USER_ID]"
        ),
    }
}
