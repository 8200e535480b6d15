//! Synchronous generation overhead: `POST /generate` with `waitForResult`
//! through the warm generate instance, end to end, minus the simulator's
//! predict time for that prediction. What is left is our share: auth, rate
//! limit, credit hold, the create call, downloading the ~1 MB image, storing
//! it in S3, the capture and the answer.

use anyhow::Result;
use serde::Serialize;

use crate::{
    events::{Catalog, http_body},
    runtime_api::Outcome,
    session::Session,
    simulator::Simulator,
    stats::{Summary, summarize},
};

/// Predict time asked of the simulator (`[sim:slow=MS]`); rendering the image counts too.
const SLOW_MS: u32 = 20;
/// Side of the square image: with `[sim:noise]` about 1 MB as WebP.
pub const SIDE: u32 = 1448;

/// The figures of the synchronous generations.
#[derive(Debug, Clone, Serialize)]
pub struct SyncOverhead {
    pub runs: usize,
    pub completed: usize,
    pub image_side_px: u32,
    /// Median stored image size.
    pub image_bytes_p50: Option<u64>,
    pub end_to_end: Option<Summary>,
    /// The simulator's `metrics.predict_time`.
    pub predict: Option<Summary>,
    /// End to end minus `predict_time` (the definition).
    pub overhead: Option<Summary>,
    /// End to end minus `total_time` (also leaves out the simulator's queueing).
    pub overhead_vs_total: Option<Summary>,
    pub problems: Vec<String>,
    /// The last generation that completed, for the status function's events.
    #[serde(skip)]
    pub last_generation: Option<String>,
    /// A generation left running (`[sim:hang]`), for the status function's events.
    #[serde(skip)]
    pub running_generation: Option<String>,
}

/// Runs `runs` synchronous generations on `session` (the generate function).
pub async fn measure(
    session: &mut Session,
    catalog: &Catalog,
    sim: &Simulator,
    runs: usize,
    tag: &str,
) -> Result<SyncOverhead> {
    let (mut e2e, mut predict, mut overhead, mut vs_total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sizes = Vec::new();
    let mut problems = Vec::new();
    let mut last_generation = None;
    for run in 0..runs {
        let prompt = format!("picture-bench {tag} sync {run} [sim:slow={SLOW_MS}] [sim:noise]");
        let event = catalog.sync_generation(&prompt, SIDE)?;
        let (took, outcome) = session.call(&event).await?;
        let body = match &outcome {
            Outcome::Response(answer) => http_body(answer),
            Outcome::Error(_) => None,
        };
        let Some(body) = body.filter(|b| b["status"] == "completed") else {
            problems.push(format!("run {run}: not completed"));
            continue;
        };
        let timings = match sim.timings(&prompt).await {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("run {run}: {e:#}"));
                continue;
            }
        };
        e2e.push(took);
        predict.push(timings.predict_s * 1000.0);
        overhead.push(took - timings.predict_s * 1000.0);
        vs_total.push(took - timings.total_s * 1000.0);
        if let Some(size) = body["image"]["fileSize"].as_u64() {
            sizes.push(size);
        }
        last_generation = body["generationId"].as_str().map(str::to_string);
    }
    // One left running, as `status-running` asks about (the reconciler fails it later).
    let hang = catalog.async_generation(
        "generate-running",
        &format!("picture-bench {tag} running [sim:hang]"),
    )?;
    let running_generation = match session.call(&hang).await?.1 {
        Outcome::Response(answer) => {
            http_body(&answer).and_then(|b| b["generationId"].as_str().map(str::to_string))
        }
        Outcome::Error(_) => None,
    };
    sizes.sort_unstable();
    Ok(SyncOverhead {
        runs,
        completed: e2e.len(),
        image_side_px: SIDE,
        image_bytes_p50: sizes.get(sizes.len().saturating_sub(1) / 2).copied(),
        end_to_end: summarize(&e2e),
        predict: summarize(&predict),
        overhead: summarize(&overhead),
        overhead_vs_total: summarize(&vs_total),
        problems,
        last_generation,
        running_generation,
    })
}
