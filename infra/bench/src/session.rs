//! Measuring one function: a few cold starts (init and first invocation
//! each), then a warm loop over its events on the last instance, optional
//! separately counted events, and the instance's peak memory at the end.

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    events::{Event, Expect, http_status},
    instance::Instance,
    runtime_api::Outcome,
    stats::{Summary, ms, summarize},
};

/// Longest wait for one answer (the generate function waits for the simulator).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(40);
/// How many wrong answers are quoted in the results.
const QUOTED_PROBLEMS: usize = 5;

/// Where a function's binary is and how it is started.
pub struct Target {
    pub name: String,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// Its `MemorySize` in template.yaml.
    pub memory_mb: u32,
    /// The `cgroup.procs` of the group it runs in, when throttled.
    pub cgroup: Option<PathBuf>,
}

/// Timings of one kind of event.
#[derive(Debug, Clone, Serialize)]
pub struct EventStats {
    pub event: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// Everything measured for one function.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub function: String,
    /// Spawn → first `next`, over the cold starts.
    pub init: Summary,
    /// The first invocation of each cold start.
    pub first: Summary,
    /// The cold request: init + first invocation, per cold start.
    pub cold: Summary,
    pub first_event: String,
    /// The warm loop, all events together.
    pub warm: Option<Summary>,
    /// Per event: the warm loop's events and the separately measured ones.
    pub events: Vec<EventStats>,
    /// Answers that were not what the sample expects (first few quoted).
    pub wrong_answers: usize,
    pub problems: Vec<String>,
    pub peak_rss_kib: u64,
}

/// A function being measured; holds its last (warm) instance.
pub struct Session {
    target: Target,
    instance: Instance,
    inits: Vec<f64>,
    firsts: Vec<f64>,
    first_event: String,
    warm: Vec<f64>,
    per_event: Vec<(String, Vec<f64>)>,
    wrong_answers: usize,
    problems: Vec<String>,
}

impl Session {
    /// Starts `target` `cold` times (at least once), each time timing init
    /// and the first invocation with `first`; keeps the last instance.
    pub async fn cold_starts(target: Target, cold: usize, first: &Event) -> Result<Session> {
        let cold = cold.max(1);
        let mut inits = Vec::new();
        let mut firsts = Vec::new();
        let mut kept = None;
        let mut problems = Vec::new();
        let mut wrong_answers = 0;
        for i in 0..cold {
            let mut instance = Instance::launch(&target).await?;
            inits.push(ms(instance.init));
            let (took, outcome) = instance.invoke(first.body.clone(), INVOKE_TIMEOUT).await?;
            firsts.push(ms(took));
            if let Some(problem) = check(first, &outcome) {
                wrong_answers += 1;
                problems.push(problem);
            }
            if i + 1 < cold {
                instance.stop();
            } else {
                kept = Some(instance);
            }
        }
        let Some(instance) = kept else {
            bail!("{}: no instance started", target.name);
        };
        Ok(Session {
            target,
            instance,
            inits,
            firsts,
            first_event: first.name.clone(),
            warm: Vec::new(),
            per_event: Vec::new(),
            wrong_answers,
            problems: problems.into_iter().take(QUOTED_PROBLEMS).collect(),
        })
    }

    /// Sends `count` events, cycling through `events`, and times each.
    pub async fn warm_loop(&mut self, events: &[Event], count: usize) -> Result<()> {
        for event in events
            .iter()
            .cycle()
            .take(if events.is_empty() { 0 } else { count })
        {
            let (took, _) = self.call(event).await?;
            self.warm.push(took);
        }
        Ok(())
    }

    /// Sends `event` `runs` times, timed on its own (not in the warm figures).
    pub async fn separately(&mut self, event: &Event, runs: usize) -> Result<()> {
        for _ in 0..runs {
            self.call(event).await?;
        }
        Ok(())
    }

    /// Sends one event, checks the answer and records its time (ms) under
    /// the event's name; returns the time and the answer.
    pub async fn call(&mut self, event: &Event) -> Result<(f64, Outcome)> {
        let (took, outcome) = self
            .instance
            .invoke(event.body.clone(), INVOKE_TIMEOUT)
            .await?;
        let took = ms(took);
        if let Some(problem) = check(event, &outcome) {
            self.wrong_answers += 1;
            if self.problems.len() < QUOTED_PROBLEMS {
                self.problems.push(problem);
            }
        }
        match self
            .per_event
            .iter_mut()
            .find(|(name, _)| *name == event.name)
        {
            Some((_, samples)) => samples.push(took),
            None => self.per_event.push((event.name.clone(), vec![took])),
        }
        Ok((took, outcome))
    }

    /// Reads the peak memory, stops the instance and summarises.
    pub fn finish(self) -> Result<Measured> {
        let peak_rss_kib = self.instance.peak_rss_kib()?;
        self.instance.stop();
        let name = &self.target.name;
        let colds: Vec<f64> = self
            .inits
            .iter()
            .zip(&self.firsts)
            .map(|(init, first)| init + first)
            .collect();
        let (Some(init), Some(first), Some(cold)) = (
            summarize(&self.inits),
            summarize(&self.firsts),
            summarize(&colds),
        ) else {
            bail!("{name}: no cold start measured");
        };
        Ok(Measured {
            function: name.clone(),
            init,
            first,
            cold,
            first_event: self.first_event,
            warm: summarize(&self.warm),
            events: self
                .per_event
                .iter()
                .filter_map(|(event, samples)| {
                    summarize(samples).map(|summary| EventStats {
                        event: event.clone(),
                        summary,
                    })
                })
                .collect(),
            wrong_answers: self.wrong_answers,
            problems: self.problems,
            peak_rss_kib,
        })
    }
}

/// Why `outcome` is not a correct answer to `event`, if it is not.
fn check(event: &Event, outcome: &Outcome) -> Option<String> {
    let quote = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
    match (outcome, event.expect) {
        (Outcome::Error(body), _) => Some(format!("{}: error {}", event.name, quote(body))),
        (Outcome::Response(body), Expect::Http(want)) => match http_status(body) {
            Some(got) if got == want => None,
            _ => Some(format!(
                "{}: expected {want}, got {}",
                event.name,
                quote(body)
            )),
        },
        (Outcome::Response(_), Expect::Success) => None,
    }
}
