//! What the soak saw: every request (route template, status, latency) and
//! every answer that broke an expectation, summarised at the end.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// One request as answered; status 0 is a transport error (no answer).
struct Sample {
    route: &'static str,
    status: u16,
    ms: f64,
}

/// Collects samples and anomalies from every user task.
#[derive(Default)]
pub struct Recorder {
    samples: Mutex<Vec<Sample>>,
    anomalies: Mutex<Vec<String>>,
}

/// Anomalies printed in full; the rest are only counted.
const SHOWN: usize = 20;

impl Recorder {
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        self.samples
            .lock()
            .unwrap()
            .push(Sample { route, status, ms });
    }

    /// An answer that is not what the scenario expects (a wrong status, a lost result).
    pub fn anomaly(&self, what: String) {
        self.anomalies.lock().unwrap().push(what);
    }

    /// Counts of 5xx answers and of transport errors.
    pub fn failures(&self) -> (usize, usize) {
        let samples = self.samples.lock().unwrap();
        let server = samples.iter().filter(|s| s.status >= 500).count();
        let transport = samples.iter().filter(|s| s.status == 0).count();
        (server, transport)
    }

    pub fn anomaly_count(&self) -> usize {
        self.anomalies.lock().unwrap().len()
    }

    /// Prints the summary: totals, statuses, latency per route, anomalies.
    pub fn print(&self, users: usize, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        let samples = self.samples.lock().unwrap();
        println!(
            "requests: {} in {elapsed:.1} s by {users} users ({:.1} req/s)",
            samples.len(),
            samples.len() as f64 / elapsed
        );
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        let mut routes: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
        for s in samples.iter() {
            *statuses.entry(s.status).or_default() += 1;
            let (times, server_errors) = routes.entry(s.route).or_default();
            times.push(s.ms);
            *server_errors += usize::from(s.status >= 500);
        }
        let statuses: Vec<String> = statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("no answer: {n}"),
                _ => format!("{status}: {n}"),
            })
            .collect();
        println!("statuses: {}", statuses.join(", "));
        println!(
            "{:<52} {:>6} {:>9} {:>9} {:>5}",
            "route", "count", "p50 ms", "p99 ms", "5xx"
        );
        for (route, (mut times, server_errors)) in routes {
            times.sort_by(f64::total_cmp);
            println!(
                "{route:<52} {:>6} {:>9.0} {:>9.0} {server_errors:>5}",
                times.len(),
                percentile(&times, 0.50),
                percentile(&times, 0.99)
            );
        }
        let anomalies = self.anomalies.lock().unwrap();
        println!("anomalies: {}", anomalies.len());
        for a in anomalies.iter().take(SHOWN) {
            println!("  {a}");
        }
        if anomalies.len() > SHOWN {
            println!("  … {} more", anomalies.len() - SHOWN);
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
