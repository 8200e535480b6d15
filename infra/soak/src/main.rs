//! `picture-soak`: many users generating through a dev gateway for a bounded
//! time (`make soak`, driven by `infra/scripts/soak.sh`). Each user runs a
//! cycle of sync, async, failing, cancelled, slow and idempotent generations,
//! webhook redeliveries and reads ([`scenario`]); `--faults` adds simulator
//! error bursts and S3 freezes ([`faults`]). Prints requests, throughput,
//! statuses, p50/p99 per route and the anomalies seen; exits 1 on any 5xx
//! or anomaly unless faults were injected.
//!
//! Usage: `picture-soak --base URL --sim URL --sim-token TOKEN --tokens FILE
//! [--duration SECS] [--faults] [--s3-pid PID]`; FILE holds one token per line,
//! one per user.

mod client;
mod faults;
mod record;
mod scenario;

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    client::{Api, Sim},
    record::Recorder,
    scenario::User,
};

/// The command line.
struct Args {
    base: String,
    sim: String,
    sim_token: String,
    tokens: String,
    duration: Duration,
    faults: bool,
    s3_pid: Option<u32>,
}

fn args() -> Result<Args> {
    let mut flags = HashMap::new();
    let mut faults = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--faults" {
            faults = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        flags.insert(flag, value);
    }
    let mut take = |name: &str| flags.remove(name);
    let args = Args {
        base: take("--base").context("--base is required")?,
        sim: take("--sim").context("--sim is required")?,
        sim_token: take("--sim-token").context("--sim-token is required")?,
        tokens: take("--tokens").context("--tokens is required")?,
        duration: Duration::from_secs(take("--duration").map_or(Ok(60), |d| d.parse())?),
        faults,
        s3_pid: take("--s3-pid").map(|p| p.parse()).transpose()?,
    };
    if let Some(unknown) = flags.keys().next() {
        bail!("unknown option {unknown}");
    }
    Ok(args)
}

/// The default model's id, from `GET /models`.
async fn default_model(http: &reqwest::Client, base: &str) -> Result<String> {
    let models: Vec<Value> = http
        .get(format!("{base}/api/v1/models"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    models
        .iter()
        .find(|m| m["isDefault"] == true)
        .or(models.first())
        .and_then(|m| m["id"].as_str())
        .map(String::from)
        .context("no models")
}

async fn run(args: Args) -> Result<bool> {
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .with_context(|| args.tokens.clone())?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let model = default_model(&http, &args.base).await?;
    let rec = Arc::new(Recorder::default());
    let api = Arc::new(Api {
        http: http.clone(),
        base: args.base.clone(),
        rec: rec.clone(),
    });
    let sim = Arc::new(Sim {
        http,
        base: args.sim.clone(),
        token: args.sim_token.clone(),
    });
    println!(
        "soak: {} users for {:?} against {}{}",
        tokens.len(),
        args.duration,
        args.base,
        if args.faults { ", with faults" } else { "" }
    );
    let started = Instant::now();
    let end = started + args.duration;
    let users: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let user = User {
                n,
                token,
                model: model.clone(),
                api: api.clone(),
                sim: sim.clone(),
            };
            tokio::spawn(user.run(end))
        })
        .collect();
    let user_count = users.len();
    if args.faults {
        faults::run(&sim, args.s3_pid, started, end).await;
    }
    for u in users {
        u.await?;
    }
    rec.print(user_count, started);
    let (server, transport) = rec.failures();
    Ok(args.faults || (server == 0 && transport == 0 && rec.anomaly_count() == 0))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("soak: FAILED (5xx, transport errors or anomalies without injected faults)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}
