//! `picture-bench`: the cold-start benchmark of issue 5.
//!
//! For every function's release `bootstrap` (and the `bench-hello` floor) it
//! serves the Lambda Runtime API on loopback, starts the bootstrap the way
//! Lambda does, against the local stack, and measures init (spawn → first
//! `next`), the first invocation, the cold request (the two together), warm latency over the samples of `events/`,
//! peak RSS and the package size; then the overhead of synchronous
//! generations, and the thumbnail budget (`bench-thumbnail`). It prints a
//! markdown table against the targets and writes
//! `target/bench/results.json`. Missed targets are reported, not failed:
//! the exit status is non-zero only when something could not be measured.
//!
//! Usage: `picture-bench [--bin-dir DIR] [--warm N] [--cold N] [--sync-runs N]
//! [--thumbnail-runs N] [--only f1,f2,thumbnail]` from the workspace root
//! (`make bench` builds the binaries).

mod callbacks;
mod events;
mod instance;
mod report;
mod runtime_api;
mod session;
mod simulator;
mod stack;
mod stats;
mod sync_gen;
mod thumbs;
mod zips;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    callbacks::Callbacks,
    events::{Catalog, Event, Expect},
    report::Row,
    session::{Measured, Session, Target},
    simulator::Simulator,
    sync_gen::SyncOverhead,
};

/// The hello-world floor.
const FLOOR: &str = "bench-hello";
/// The HTTP functions, in the order measured: generate first, so that status
/// can ask about a generation that exists.
const HTTP_FUNCTIONS: [&str; 8] = [
    "generate", "models", "status", "cancel", "webhook", "images", "history", "credits",
];
/// Samples kept out of the warm loop (they wait for the simulator or leave
/// generations behind) and timed on their own, this many times each.
const SEPARATE: [&str; 2] = ["generate-sync", "generate-async"];
const SEPARATE_RUNS: usize = 3;
/// The simulator's token and webhook secret for this run.
const SIM_TOKEN: &str = "r8_picture_bench";
const SIM_SECRET: &str = "whsec_cGljdHVyZS1sb2NhbC1yZXBsaWNhdGUtc2ltdWxhdG8=";
/// Settings the benchmark replaces in the functions' environment.
const REPLACED: [&str; 9] = [
    "JWKS_URL",
    "WEBHOOK_BASE_URL",
    "REPLICATE_API_BASE_URL",
    "REPLICATE_API_TOKEN",
    "REPLICATE_WEBHOOK_SECRET",
    "OUTPUT_ALLOWED_HOSTS",
    "RATE_LIMIT_READS_PER_MINUTE",
    "RATE_LIMIT_GENERATE_PER_MINUTE",
    "MAX_IN_FLIGHT_PER_USER",
];

/// Command-line settings.
#[derive(Debug, serde::Serialize)]
struct Options {
    bin_dir: PathBuf,
    out: PathBuf,
    /// Warm invocations per function (migrate: a tenth).
    warm: usize,
    /// Cold starts per function (init and first invocation are their medians).
    cold: usize,
    sync_runs: usize,
    /// Timed thumbnail runs per input.
    thumbnail_runs: usize,
    only: Option<Vec<String>>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options> {
        let mut o = Options {
            bin_dir: PathBuf::from("target/release"),
            out: PathBuf::from("target/bench"),
            warm: 300,
            cold: 10,
            sync_runs: 50,
            thumbnail_runs: 20,
            only: None,
        };
        while let Some(flag) = args.next() {
            let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
            let count = |v: String| v.parse::<usize>().with_context(|| format!("{flag} {v}"));
            match flag.as_str() {
                "--bin-dir" => o.bin_dir = value()?.into(),
                "--out" => o.out = value()?.into(),
                "--warm" => o.warm = count(value()?)?,
                "--cold" => o.cold = count(value()?)?.max(1),
                "--sync-runs" => o.sync_runs = count(value()?)?,
                "--thumbnail-runs" => o.thumbnail_runs = count(value()?)?.max(1),
                "--only" => o.only = Some(value()?.split(',').map(str::to_string).collect()),
                _ => bail!(
                    "usage: picture-bench [--bin-dir DIR] [--out DIR] [--warm N] [--cold N] [--sync-runs N] [--thumbnail-runs N] [--only f1,f2,thumbnail]"
                ),
            }
        }
        Ok(o)
    }

    fn wants(&self, function: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|f| f == function))
    }
}

/// What every measurement needs.
struct Ctx {
    opts: Options,
    logs: PathBuf,
    env: Vec<(String, String)>,
}

impl Ctx {
    fn target(&self, name: &str) -> Result<Target> {
        let binary = self.opts.bin_dir.join(name);
        let binary = std::path::absolute(&binary)
            .ok()
            .filter(|b| b.is_file())
            .with_context(|| format!("{} is missing: `make bench` builds it", binary.display()))?;
        Ok(Target {
            name: name.to_string(),
            binary,
            env: self.env.clone(),
            log: self.logs.join(format!("{name}.log")),
        })
    }

    /// Cold starts with `first`, then `count` warm invocations cycling through `warm`.
    async fn session(
        &self,
        name: &str,
        first: &Event,
        warm: &[Event],
        count: usize,
    ) -> Result<Session> {
        let mut session = Session::cold_starts(self.target(name)?, self.opts.cold, first).await?;
        session.warm_loop(warm, count).await?;
        Ok(session)
    }

    async fn measure(&self, name: &str, warm: &[Event], count: usize) -> Result<Measured> {
        let first = warm.first().with_context(|| format!("{name}: no events"))?;
        self.session(name, first, warm, count).await?.finish()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("picture-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Dropping the run on Ctrl-C kills every child it started.
    tokio::select! {
        result = run(opts) => match result {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("picture-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("picture-bench: interrupted");
            ExitCode::from(130)
        }
    }
}

/// The whole benchmark; `Ok(false)` when some function could not be measured.
async fn run(opts: Options) -> Result<bool> {
    let root = std::env::current_dir()?;
    if !root.join("events/manifest.json").is_file() {
        bail!("run picture-bench from the workspace root");
    }
    let logs = opts.out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let stack_env = stack::up(&root)?;
    let user = uuid::Uuid::new_v4().to_string();
    let token = stack::prepare(&root, &stack_env, &user)?;
    let jwks =
        std::fs::read_to_string(root.join(".dev/jwks.json")).context("reading .dev/jwks.json")?;
    let callbacks = Callbacks::start(jwks).await?;
    let venv = std::env::var("PICTURE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/picture-venv")
        });
    let sim = Simulator::start(
        &venv.join("bin/python"),
        &root.join("infra/replicate-sim/sim.py"),
        SIM_TOKEN,
        SIM_SECRET,
        &logs.join("replicate-sim.log"),
    )
    .await?;
    let env = function_env(&stack_env, &callbacks, &sim);
    let catalog = Catalog::load(&root.join("events"), &token)?;
    let ctx = Ctx { opts, logs, env };
    eprintln!("bench: user {user}; logs in {}", ctx.logs.display());

    let sample = catalog.for_function("models")?.into_iter().next();
    let echo = Event {
        name: "echo".into(),
        expect: Expect::Success,
        ..sample.context("events/manifest.json has no models sample")?
    };
    let floor = ctx
        .measure(FLOOR, std::slice::from_ref(&echo), ctx.opts.warm)
        .await
        .context("the floor (bench-hello) could not be measured")?;
    progress(&floor);

    let mut measured = Vec::new();
    let mut failed = Vec::new();
    let mut sync = None;
    let tag = &user[..8];
    for function in HTTP_FUNCTIONS.iter().filter(|f| ctx.opts.wants(f)) {
        let result = match *function {
            "generate" => generate(&ctx, &catalog, &sim, tag).await.map(|(m, s)| {
                sync = Some(s);
                m
            }),
            "status" => {
                let running = sync.as_ref().and_then(|s| s.running_generation.as_deref());
                let mut warm = catalog.for_function_running("status", running)?;
                if let Some(id) = sync.as_ref().and_then(|s| s.last_generation.as_deref()) {
                    warm.push(catalog.status_of(id)?);
                }
                ctx.measure("status", &warm, ctx.opts.warm).await
            }
            f => {
                ctx.measure(f, &catalog.for_function(f)?, ctx.opts.warm)
                    .await
            }
        };
        record(function, result, &mut measured, &mut failed);
    }
    if ctx.opts.wants("reconcile") {
        let result = ctx
            .measure("reconcile", &[events::scheduled()], ctx.opts.warm)
            .await;
        record("reconcile", result, &mut measured, &mut failed);
    }
    if ctx.opts.wants("migrate") {
        let result = migrate(&ctx, &callbacks).await;
        record("migrate", result, &mut measured, &mut failed);
    }

    let mut thumbnails = None;
    if ctx.opts.wants("thumbnail") {
        let binary = ctx.target("bench-thumbnail")?.binary;
        match thumbs::measure(&sim, &binary, &ctx.opts.out, ctx.opts.thumbnail_runs).await {
            Ok(figures) => thumbnails = Some(figures),
            Err(e) => {
                eprintln!("bench: thumbnail: {e:#}");
                failed.push(("thumbnail".into(), format!("{e:#}")));
            }
        }
    }

    let base = report::Floor::of(&floor);
    let mut rows = vec![Row::new(&floor, true, base, zip(&ctx, &root, FLOOR))];
    rows.extend(
        measured
            .iter()
            .map(|m| Row::new(m, false, base, zip(&ctx, &root, &m.function))),
    );
    println!("\n{}", report::table(&rows, &failed));
    if let Some(s) = &sync {
        println!("{}\n", report::sync_line(s));
    }
    if let Some(figures) = &thumbnails {
        println!("{}", thumbs::lines(figures));
    }
    for m in measured.iter().filter(|m| !m.problems.is_empty()) {
        println!(
            "{}: {} wrong answers, e.g. {}",
            m.function, m.wrong_answers, m.problems[0]
        );
    }
    let results = ctx.opts.out.join("results.json");
    let doc = json!({
        "generated_at_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "options": ctx.opts,
        "targets": {
            "init_ratio": report::INIT_RATIO,
            "cold_ratio": report::COLD_RATIO,
            "cold_ratio_functions": report::COLD_FUNCTIONS,
            "warm_p50_ms": report::WARM_P50_MS,
            "warm_p50_functions": report::FAST_FUNCTIONS,
            "peak_rss_mb": report::PEAK_RSS_MB,
            "zip_mb": report::ZIP_MB,
            "sync_overhead_p50_ms": report::SYNC_OVERHEAD_MS,
            "thumbnail_p50_ms": thumbs::P50_MS,
            "thumbnail_peak_rss_mb": thumbs::PEAK_RSS_MB,
        },
        "rows": rows,
        "failed": failed,
        "floor": floor,
        "functions": measured,
        "sync_generation": sync,
        "thumbnail": thumbnails,
    });
    std::fs::write(&results, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", results.display()))?;
    println!("results: {}", results.display());
    Ok(failed.is_empty())
}

/// The stack's settings with the benchmark's own callbacks and simulator.
fn function_env(
    stack: &[(String, String)],
    cb: &Callbacks,
    sim: &Simulator,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = stack
        .iter()
        .filter(|(k, _)| !REPLACED.contains(&k.as_str()))
        .cloned()
        .collect();
    let unlimited = "1000000".to_string();
    env.extend([
        ("JWKS_URL".into(), format!("{}/dev/jwks.json", cb.base_url)),
        ("WEBHOOK_BASE_URL".into(), cb.base_url.clone()),
        ("REPLICATE_API_BASE_URL".into(), sim.base_url.clone()),
        ("REPLICATE_API_TOKEN".into(), SIM_TOKEN.into()),
        ("REPLICATE_WEBHOOK_SECRET".into(), SIM_SECRET.into()),
        ("OUTPUT_ALLOWED_HOSTS".into(), sim.host().into()),
        ("RATE_LIMIT_READS_PER_MINUTE".into(), unlimited.clone()),
        ("RATE_LIMIT_GENERATE_PER_MINUTE".into(), unlimited.clone()),
        // The async samples leave generations open; hundreds of them are not refused either.
        ("MAX_IN_FLIGHT_PER_USER".into(), unlimited),
    ]);
    env
}

/// generate: the cheap samples warm, the slow ones separately, then the
/// synchronous generations of the overhead figure.
async fn generate(
    ctx: &Ctx,
    catalog: &Catalog,
    sim: &Simulator,
    tag: &str,
) -> Result<(Measured, SyncOverhead)> {
    let (separate, warm): (Vec<Event>, Vec<Event>) = catalog
        .for_function("generate")?
        .into_iter()
        .partition(|e| SEPARATE.contains(&e.name.as_str()));
    let first = warm.first().context("generate: no fast samples")?;
    let mut session = ctx.session("generate", first, &warm, ctx.opts.warm).await?;
    for event in &separate {
        session.separately(event, SEPARATE_RUNS).await?;
    }
    let sync = sync_gen::measure(&mut session, catalog, sim, ctx.opts.sync_runs, tag).await?;
    Ok((session.finish()?, sync))
}

/// migrate: a Create request cold, Update requests warm (nothing left to
/// apply); every answer CloudFormation would get must be SUCCESS.
async fn migrate(ctx: &Ctx, callbacks: &Callbacks) -> Result<Measured> {
    let url = |kind: &str| format!("{}/cfn/{kind}", callbacks.base_url);
    let first = events::custom_resource("Create", &url("create"));
    let update = events::custom_resource("Update", &url("update"));
    let session = ctx
        .session("migrate", &first, &[update], (ctx.opts.warm / 10).max(10))
        .await?;
    let measured = session.finish()?;
    let answers = callbacks.cfn_answers();
    if let Some(bad) = answers.iter().find(|a| a["Status"] != "SUCCESS") {
        bail!("migrate answered CloudFormation with {bad}");
    }
    if answers.len() < measured.init.count {
        bail!(
            "migrate answered CloudFormation {} times for {} cold starts",
            answers.len(),
            measured.init.count
        );
    }
    Ok(measured)
}

/// The package size of `function`, or `None` (with a note) if unknown.
fn zip(ctx: &Ctx, root: &Path, function: &str) -> Option<report::Zip> {
    let binary = ctx.opts.bin_dir.join(function);
    zips::size(root, &ctx.opts.out, function, &binary)
        .map_err(|e| eprintln!("bench: {function}: no zip size: {e:#}"))
        .ok()
}

fn record(
    function: &str,
    result: Result<Measured>,
    measured: &mut Vec<Measured>,
    failed: &mut Vec<(String, String)>,
) {
    match result {
        Ok(m) => {
            progress(&m);
            measured.push(m);
        }
        Err(e) => {
            eprintln!("bench: {function}: {e:#}");
            failed.push((function.to_string(), format!("{e:#}")));
        }
    }
}

fn progress(m: &Measured) {
    eprintln!(
        "bench: {}: init p50 {:.2} ms, first p50 {:.2} ms, cold request p50 {:.2} ms, warm p50 {}, peak RSS {:.1} MB",
        m.function,
        m.init.p50_ms,
        m.first.p50_ms,
        m.cold.p50_ms,
        m.warm.map_or("–".into(), |w| format!("{:.2} ms", w.p50_ms)),
        m.peak_rss_kib as f64 / 1024.0
    );
}
