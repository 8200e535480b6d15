//! Synchronous generation overhead: `POST /generate` with `waitForResult`
//! through the warm generate instance, end to end, minus the simulator's
//! predict time for that prediction. What is left is our share: auth, rate
//! limit, credit hold, the create call, downloading the ~1 MB image, storing
//! it in S3, the capture and the answer; for three kinds of output (see
//! [`OUTPUTS`]), since what is done with an output depends on what it is.

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

/// The outputs measured, taken in turn in every round so that each sees the
/// same load: the bench's 1 MB noisy WebP, a flux-sized drawing and an SVG
/// (the baseline of issue 21: an output no thumbnail is ever made of).
pub const OUTPUTS: [Output; 3] = [
    Output {
        name: "noisy-webp-1448",
        markers: " [sim:noise]",
        side: SIDE,
    },
    Output {
        name: "drawing-webp-1024",
        markers: "",
        side: 1024,
    },
    Output {
        name: "svg-1024",
        markers: " [sim:svg]",
        side: 1024,
    },
];

/// One kind of output the simulator makes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Output {
    pub name: &'static str,
    /// The simulator's markers in the prompt.
    #[serde(skip)]
    markers: &'static str,
    pub side: u32,
}

/// The figures of one output's synchronous generations.
#[derive(Debug, Clone, Serialize)]
pub struct SyncOverhead {
    pub output: Output,
    pub runs: usize,
    pub completed: usize,
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
}

/// The synchronous generations of one generate session, per output.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRun {
    /// In the order of [`OUTPUTS`].
    pub outputs: Vec<SyncOverhead>,
    /// The last generation that completed, for the status function's events.
    #[serde(skip)]
    pub last_generation: Option<String>,
    /// A generation left running (`[sim:hang]`), for the status function's events.
    #[serde(skip)]
    pub running_generation: Option<String>,
}

impl SyncRun {
    /// The figures of the output called `name`.
    pub fn output(&self, name: &str) -> Option<&SyncOverhead> {
        self.outputs.iter().find(|o| o.output.name == name)
    }
}

/// Samples of one output, gathered round by round.
#[derive(Default)]
struct Samples {
    e2e: Vec<f64>,
    predict: Vec<f64>,
    overhead: Vec<f64>,
    vs_total: Vec<f64>,
    sizes: Vec<u64>,
    problems: Vec<String>,
}

/// Runs `runs` rounds of synchronous generations, one of each of
/// [`OUTPUTS`] per round, on `session` (the generate function).
pub async fn measure(
    session: &mut Session,
    catalog: &Catalog,
    sim: &Simulator,
    runs: usize,
    tag: &str,
) -> Result<SyncRun> {
    let mut samples: Vec<Samples> = OUTPUTS.iter().map(|_| Samples::default()).collect();
    let mut last_generation = None;
    for run in 0..runs {
        for (output, s) in OUTPUTS.iter().zip(&mut samples) {
            let prompt = format!(
                "picture-bench {tag} sync {run} {} [sim:slow={SLOW_MS}]{}",
                output.name, output.markers
            );
            let event = catalog.sync_generation(&prompt, output.side)?;
            let (took, outcome) = session.call(&event).await?;
            let body = match &outcome {
                Outcome::Response(answer) => http_body(answer),
                Outcome::Error(_) => None,
            };
            let Some(body) = body.filter(|b| b["status"] == "completed") else {
                s.problems.push(format!("run {run}: not completed"));
                continue;
            };
            let timings = match sim.timings(&prompt).await {
                Ok(t) => t,
                Err(e) => {
                    s.problems.push(format!("run {run}: {e:#}"));
                    continue;
                }
            };
            s.e2e.push(took);
            s.predict.push(timings.predict_s * 1000.0);
            s.overhead.push(took - timings.predict_s * 1000.0);
            s.vs_total.push(took - timings.total_s * 1000.0);
            if let Some(size) = body["image"]["fileSize"].as_u64() {
                s.sizes.push(size);
            }
            last_generation = body["generationId"].as_str().map(str::to_string);
        }
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
    let outputs = OUTPUTS
        .iter()
        .zip(samples)
        .map(|(output, mut s)| {
            s.sizes.sort_unstable();
            SyncOverhead {
                output: *output,
                runs,
                completed: s.e2e.len(),
                image_bytes_p50: s.sizes.get(s.sizes.len().saturating_sub(1) / 2).copied(),
                end_to_end: summarize(&s.e2e),
                predict: summarize(&s.predict),
                overhead: summarize(&s.overhead),
                overhead_vs_total: summarize(&s.vs_total),
                problems: s.problems,
            }
        })
        .collect();
    Ok(SyncRun {
        outputs,
        last_generation,
        running_generation,
    })
}
