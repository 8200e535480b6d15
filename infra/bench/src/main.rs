//! `picture-bench`: the cold-start benchmark of issue 5.
//!
//! For every function's release `bootstrap` (and the `bench-hello` floor) it
//! serves the Lambda Runtime API on loopback, starts the bootstrap the way
//! Lambda does, against the local stack, and measures init (spawn → first
//! `next`), the first invocation, the cold request (the two together), warm latency over the samples of `events/`,
//! peak RSS and the package size; then the overhead of synchronous
//! generations, and the thumbnail budget (`bench-thumbnail`). Each function
//! runs twice: on the machine's cores, and in a cgroup limited to the CPU
//! share Lambda gives its `MemorySize` in template.yaml (issue 21, see
//! [`quota`]); the settings are the template's literal ones
//! (`THUMBNAILS=event`, …) over the local stack's. It prints a markdown table
//! against the targets (full core), one of both CPUs, and writes
//! `target/bench/results.json`. Missed targets are reported, not failed:
//! the exit status is non-zero only when something could not be measured.
//!
//! Usage: `picture-bench [--bin-dir DIR] [--warm N] [--cold N] [--sync-runs N]
//! [--thumbnail-runs N] [--only f1,f2,thumbnail]` from the workspace root
//! (`make bench` builds the binaries).

mod callbacks;
mod events;
mod instance;
mod quota;
mod report;
mod runtime_api;
mod session;
mod simulator;
mod stack;
mod stats;
mod sync_gen;
mod template;
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
    quota::{Cgroup, Hierarchy, Share},
    report::{Row, ShareRow},
    session::{Measured, Session, Target},
    simulator::Simulator,
    sync_gen::SyncRun,
    template::Template,
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
    template: Template,
    /// Where the throttled runs' cgroups are made; `None`: unthrottled only.
    cpu: Option<Hierarchy>,
}

impl Ctx {
    /// `name`'s binary with the functions' settings, in `group` when throttled.
    fn target(&self, name: &str, group: Option<&Cgroup>) -> Result<Target> {
        let binary = self.opts.bin_dir.join(name);
        let binary = std::path::absolute(&binary)
            .ok()
            .filter(|b| b.is_file())
            .with_context(|| format!("{} is missing: `make bench` builds it", binary.display()))?;
        let log = match group {
            Some(_) => format!("{name}-throttled.log"),
            None => format!("{name}.log"),
        };
        Ok(Target {
            name: name.to_string(),
            binary,
            env: self.env.clone(),
            log: self.logs.join(log),
            memory_mb: self.template.memory_mb(name),
            cgroup: group.map(Cgroup::procs),
        })
    }

    /// Cold starts with `first`, then `count` warm invocations cycling through `warm`.
    async fn session(
        &self,
        name: &str,
        group: Option<&Cgroup>,
        first: &Event,
        warm: &[Event],
        count: usize,
    ) -> Result<Session> {
        let target = self.target(name, group)?;
        let mut session = Session::cold_starts(target, self.opts.cold, first).await?;
        session.warm_loop(warm, count).await?;
        Ok(session)
    }

    async fn measure(
        &self,
        name: &str,
        group: Option<&Cgroup>,
        warm: &[Event],
        count: usize,
    ) -> Result<Measured> {
        let first = warm.first().with_context(|| format!("{name}: no events"))?;
        self.session(name, group, first, warm, count)
            .await?
            .finish()
    }

    /// A cgroup for `function` at the share of its memory size, if throttling is possible.
    fn share_group(&self, function: &str) -> Option<Result<Cgroup>> {
        let share = Share::of(self.template.memory_mb(function));
        let name = format!("picture-bench-{}-{function}", std::process::id());
        self.cpu.as_ref().map(|cpu| cpu.create(&name, share))
    }
}

/// What one function's measurement needs besides [`Ctx`].
struct Inputs<'a> {
    catalog: &'a Catalog,
    sim: &'a Simulator,
    callbacks: &'a Callbacks,
    tag: &'a str,
    /// The generations status asks about (from the unthrottled generate run).
    status_ids: (Option<String>, Option<String>),
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
    let template = Template::load(&root.join("template.yaml"))?;
    let env = function_env(&stack_env, &template.env, &callbacks, &sim);
    let catalog = Catalog::load(&root.join("events"), &token)?;
    let cpu = match Hierarchy::detect() {
        Ok(cpu) => {
            eprintln!(
                "bench: throttled runs in cgroup {} ({cpu:?})",
                cpu.version()
            );
            Some(cpu)
        }
        Err(e) => {
            eprintln!(
                "bench: NOTE: no writable cgroup with the cpu controller ({e:#}); \
                 reporting unthrottled figures only"
            );
            None
        }
    };
    let ctx = Ctx {
        opts,
        logs,
        env,
        template,
        cpu,
    };
    eprintln!("bench: user {user}; logs in {}", ctx.logs.display());

    let mut inputs = Inputs {
        catalog: &catalog,
        sim: &sim,
        callbacks: &callbacks,
        tag: &user[..8],
        status_ids: (None, None),
    };
    let (floor, _) = measure_function(&ctx, &inputs, FLOOR, None)
        .await
        .context("the floor (bench-hello) could not be measured")?;
    progress(&floor, "");

    let mut measured = Vec::new();
    let mut failed = Vec::new();
    let mut share_rows = Vec::new();
    let (mut sync, mut sync_share) = (None, None);
    // Every function's figures at its CPU share, the floor's first.
    let mut throttled = Vec::new();
    let functions = HTTP_FUNCTIONS
        .iter()
        .chain(&["reconcile", "migrate"])
        .filter(|f| ctx.opts.wants(f));
    for &function in std::iter::once(&FLOOR).chain(functions) {
        if function == "reconcile" {
            make_thumbnails(&root, &stack_env).await;
        }
        let full = if function == FLOOR {
            Some(floor.clone())
        } else {
            let result = measure_function(&ctx, &inputs, function, None).await;
            record(function, result, &mut failed).map(|(m, run)| {
                progress(&m, "");
                if let Some(run) = run {
                    let ids = (&run.last_generation, &run.running_generation);
                    inputs.status_ids = (ids.0.clone(), ids.1.clone());
                    sync = Some(run);
                }
                measured.push(m.clone());
                m
            })
        };
        let Some(group) = ctx.share_group(function) else {
            continue;
        };
        let result = match group {
            Ok(group) => measure_function(&ctx, &inputs, function, Some(&group))
                .await
                .map(|(m, run)| (m, run, group.share)),
            Err(e) => Err(e),
        };
        let label = format!("{function} at its CPU share");
        let Some((m, run, share)) = record(&label, result, &mut failed) else {
            continue;
        };
        progress(&m, &format!(" (at {:.4} core)", share.cores));
        if let Some(run) = run {
            sync_share = Some((run, share));
        }
        if let Some(full) = &full {
            share_rows.push(ShareRow::new(full, &m, share));
        }
        throttled.push(m);
    }

    let (mut thumbnails, mut thumbnails_share) = (None, None);
    if ctx.opts.wants("thumbnail") {
        let binary = ctx.target("bench-thumbnail", None)?.binary;
        let (out, runs) = (&ctx.opts.out, ctx.opts.thumbnail_runs);
        match thumbs::measure(&sim, &binary, out, runs, None).await {
            Ok(figures) => thumbnails = Some(figures),
            Err(e) => {
                eprintln!("bench: thumbnail: {e:#}");
                failed.push(("thumbnail".into(), format!("{e:#}")));
            }
        }
        // Again at the CPU share of the function that makes them.
        if let Some(group) = ctx.share_group("thumbnails") {
            let measured = match group {
                Ok(g) => thumbs::measure(&sim, &binary, out, runs, Some(&g))
                    .await
                    .map(|f| (f, g.share)),
                Err(e) => Err(e),
            };
            match measured {
                Ok(figures) => thumbnails_share = Some(figures),
                Err(e) => {
                    eprintln!("bench: thumbnail at its share: {e:#}");
                    failed.push(("thumbnail (share)".into(), format!("{e:#}")));
                }
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
    if let Some(s) = sync
        .as_ref()
        .and_then(|s| s.output(sync_gen::OUTPUTS[0].name))
    {
        println!("{}\n", report::sync_line(s));
    }
    if let Some(cpu) = &ctx.cpu {
        println!(
            "At the Lambda CPU share (cgroup {}, quota = MemorySize / {} of a core, period {} µs):\n\n{}",
            cpu.version(),
            quota::FULL_CORE_MB,
            quota::PERIOD_US,
            report::share_table(&share_rows)
        );
    }
    if let Some(full) = &sync {
        let share = sync_share.as_ref().map(|(run, share)| (run, *share));
        println!(
            "Sync generation overhead per output (end to end − predict_time):\n\n{}",
            report::sync_table(full, share)
        );
    }
    if let Some(figures) = &thumbnails {
        println!("{}", thumbs::lines(figures, None));
    }
    if let Some((figures, share)) = &thumbnails_share {
        println!("{}", thumbs::lines(figures, Some(share)));
    }
    let cpus = measured
        .iter()
        .map(|m| (m, ""))
        .chain(throttled.iter().map(|m| (m, " at its CPU share")));
    for (m, cpu) in cpus.filter(|(m, _)| !m.problems.is_empty()) {
        println!(
            "{}{cpu}: {} wrong answers, e.g. {}",
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
            "share_sync_ratio_to_svg": report::SHARE_SYNC_RATIO,
            "thumbnail_p50_ms": thumbs::P50_MS,
            "thumbnail_peak_rss_mb": thumbs::PEAK_RSS_MB,
        },
        "rows": rows,
        "failed": failed,
        "floor": floor,
        "functions": measured,
        "sync_generation": sync,
        "cpu_share": {
            "cgroup": ctx.cpu.as_ref().map(Hierarchy::version),
            "full_core_mb": quota::FULL_CORE_MB,
            "functions": throttled,
            "rows": share_rows,
            "sync_generation": sync_share.as_ref().map(|(run, _)| run),
            "sync_ratios_to_svg": sync_share.as_ref().map(|(run, _)| report::sync_ratios(run)),
        },
        "thumbnail": thumbnails,
        "thumbnail_share": thumbnails_share,
    });
    std::fs::write(&results, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", results.display()))?;
    println!("results: {}", results.display());
    Ok(failed.is_empty())
}

/// The stack's settings under the template's literal ones, with the
/// benchmark's own callbacks and simulator.
fn function_env(
    stack: &[(String, String)],
    template: &[(String, String)],
    cb: &Callbacks,
    sim: &Simulator,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = stack
        .iter()
        .filter(|(k, _)| !REPLACED.contains(&k.as_str()))
        .filter(|(k, _)| !template.iter().any(|(t, _)| t == k))
        .cloned()
        .collect();
    env.extend(template.iter().cloned());
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

/// Makes the thumbnails the stack's stored images lack, as their S3 events would have on AWS
/// (no event fires here): the reconciler's runs then measure its usual work, not a backlog
/// of the generate sessions' outputs (before, its first run spent ~3 s making them).
async fn make_thumbnails(root: &std::path::Path, stack_env: &stack::Env) {
    let started = std::time::Instant::now();
    let (root, env) = (root.to_path_buf(), stack_env.clone());
    let made = tokio::task::spawn_blocking(move || {
        stack::picture_dev(&root, &env, &["backfill-thumbnails"])
    });
    match made.await.map_err(anyhow::Error::from).and_then(|out| out) {
        Ok(out) => eprintln!(
            "bench: thumbnails of stored images made before reconcile ({:.1} s): {}",
            started.elapsed().as_secs_f64(),
            out.lines().last().unwrap_or("").trim()
        ),
        Err(e) => eprintln!("bench: WARNING: thumbnails not made before reconcile: {e:#}"),
    }
}

/// Measures one function (or the floor), in `group` when throttled; the
/// generate function also answers the synchronous generations.
async fn measure_function(
    ctx: &Ctx,
    inputs: &Inputs<'_>,
    function: &str,
    group: Option<&Cgroup>,
) -> Result<(Measured, Option<SyncRun>)> {
    let catalog = inputs.catalog;
    let warm = ctx.opts.warm;
    let measured = match function {
        "generate" => {
            let (m, sync) = generate(ctx, inputs, group).await?;
            return Ok((m, Some(sync)));
        }
        FLOOR => {
            let sample = catalog.for_function("models")?.into_iter().next();
            let echo = Event {
                name: "echo".into(),
                expect: Expect::Success,
                ..sample.context("events/manifest.json has no models sample")?
            };
            ctx.measure(FLOOR, group, &[echo], warm).await
        }
        "status" => {
            let (last, running) = &inputs.status_ids;
            let mut events = catalog.for_function_running("status", running.as_deref())?;
            if let Some(id) = last {
                events.push(catalog.status_of(id)?);
            }
            ctx.measure("status", group, &events, warm).await
        }
        "reconcile" => {
            ctx.measure("reconcile", group, &[events::scheduled()], warm)
                .await
        }
        "migrate" => migrate(ctx, inputs.callbacks, group).await,
        f => ctx.measure(f, group, &catalog.for_function(f)?, warm).await,
    };
    Ok((measured?, None))
}

/// generate: the cheap samples warm, the slow ones separately, then the
/// synchronous generations of the overhead figures.
async fn generate(
    ctx: &Ctx,
    inputs: &Inputs<'_>,
    group: Option<&Cgroup>,
) -> Result<(Measured, SyncRun)> {
    let (separate, warm): (Vec<Event>, Vec<Event>) = inputs
        .catalog
        .for_function("generate")?
        .into_iter()
        .partition(|e| SEPARATE.contains(&e.name.as_str()));
    let first = warm.first().context("generate: no fast samples")?;
    let mut session = ctx
        .session("generate", group, first, &warm, ctx.opts.warm)
        .await?;
    for event in &separate {
        session.separately(event, SEPARATE_RUNS).await?;
    }
    let (runs, tag) = (ctx.opts.sync_runs, inputs.tag);
    let sync = sync_gen::measure(&mut session, inputs.catalog, inputs.sim, runs, tag).await?;
    Ok((session.finish()?, sync))
}

/// migrate: a Create request cold, Update requests warm (nothing left to
/// apply); every answer CloudFormation would get must be SUCCESS.
async fn migrate(ctx: &Ctx, callbacks: &Callbacks, group: Option<&Cgroup>) -> Result<Measured> {
    let url = |kind: &str| format!("{}/cfn/{kind}", callbacks.base_url);
    let first = events::custom_resource("Create", &url("create"));
    let update = events::custom_resource("Update", &url("update"));
    let session = ctx
        .session(
            "migrate",
            group,
            &first,
            &[update],
            (ctx.opts.warm / 10).max(10),
        )
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

/// The value of `result`, or `None` with the error noted in `failed` under `label`.
fn record<T>(label: &str, result: Result<T>, failed: &mut Vec<(String, String)>) -> Option<T> {
    result
        .map_err(|e| {
            eprintln!("bench: {label}: {e:#}");
            failed.push((label.to_string(), format!("{e:#}")));
        })
        .ok()
}

fn progress(m: &Measured, cpu: &str) {
    eprintln!(
        "bench: {}{cpu}: init p50 {:.2} ms, first p50 {:.2} ms, cold request p50 {:.2} ms, warm p50 {}, peak RSS {:.1} MB",
        m.function,
        m.init.p50_ms,
        m.first.p50_ms,
        m.cold.p50_ms,
        m.warm.map_or("–".into(), |w| format!("{:.2} ms", w.p50_ms)),
        m.peak_rss_kib as f64 / 1024.0
    );
}
