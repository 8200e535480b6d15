//! Fault injection during the run (`--faults`): bursts of simulator errors on
//! each Replicate operation, and the S3 server frozen for a few seconds.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::client::Sim;

/// Time between two faults.
const EVERY: Duration = Duration::from_secs(6);
/// How long S3 stays frozen.
const FREEZE: Duration = Duration::from_secs(3);

/// A fault injected.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The next calls of these simulator operations answer this status.
    Sim(&'static [&'static str], u16, u32),
    /// SIGSTOP on the S3 server, SIGCONT after [`FREEZE`].
    FreezeS3,
}

const CYCLE: [Fault; 6] = [
    Fault::Sim(&["create"], 500, 5),
    Fault::Sim(&["get"], 429, 10),
    Fault::FreezeS3,
    Fault::Sim(&["cancel"], 500, 5),
    Fault::Sim(&["get", "list"], 500, 10),
    Fault::Sim(&["create"], 429, 5),
];

/// Injects faults in turn until `end`, then clears them; prints each one.
pub async fn run(sim: &Sim, s3_pid: Option<u32>, started: Instant, end: Instant) {
    let mut i = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        if Instant::now() >= end {
            break;
        }
        let fault = CYCLE[i % CYCLE.len()];
        i += 1;
        let at = started.elapsed().as_secs();
        match fault {
            Fault::Sim(ops, status, count) => match sim.inject(ops, status, count).await {
                Ok(()) => println!("fault at {at} s: simulator {ops:?} answer {status} ×{count}"),
                Err(e) => println!("fault at {at} s: injection failed: {e}"),
            },
            Fault::FreezeS3 => match s3_pid {
                Some(pid) => {
                    signal(pid, "STOP");
                    println!("fault at {at} s: S3 server (pid {pid}) frozen for {FREEZE:?}");
                    tokio::time::sleep(FREEZE).await;
                    signal(pid, "CONT");
                }
                None => println!("fault at {at} s: no S3 pid given, freeze skipped"),
            },
        }
    }
    if let Err(e) = sim.clear_faults().await {
        println!("clearing the simulator's faults failed: {e}");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("kill -{sig} {pid} failed");
    }
}
