//! Work that need not hold up an answer. Under the Lambda loop it starts once
//! the invocation has answered (so it takes no CPU from the answer: a 256 MB
//! function has a seventh of a core) and is awaited before the instance takes
//! its next event (Lambda may freeze a process between events, so nothing is
//! left running then). Elsewhere (the dev gateway, tests) it runs at once.
//! Reads are counted against their rate limit this way.
//!
//! Platform: imports nothing of this crate.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

/// The most [`settle`] waits: the work itself has shorter timeouts.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(3);

/// Deferred work not finished yet, and a wake-up for [`settle`] when one finishes.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static FINISHED: Notify = Notify::const_new();

/// Set by the Lambda loop ([`after_answers`]): work waits for [`settle`].
static AFTER_ANSWERS: AtomicBool = AtomicBool::new(false);

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Work waiting for the answer, with its place in [`RUNNING`].
static WAITING: Mutex<Vec<(Work, Running)>> = Mutex::new(Vec::new());

/// Counts itself out of [`RUNNING`] when its work ends (or is dropped).
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        FINISHED.notify_waiters();
    }
}

/// From now on, work waits for the answer: [`settle`] starts it (the Lambda loop).
pub fn after_answers() {
    AFTER_ANSWERS.store(true, Ordering::SeqCst);
}

/// Runs `work` in the background: once the answer is out under the Lambda
/// loop, else at once; [`settle`] waits for it either way.
pub fn defer(work: impl Future<Output = ()> + Send + 'static) {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    let running = Running;
    if AFTER_ANSWERS.load(Ordering::SeqCst) {
        let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
        waiting.push((Box::pin(work), running));
    } else {
        start(Box::pin(work), running);
    }
}

fn start(work: Work, running: Running) {
    tokio::spawn(async move {
        let _running = running;
        work.await;
    });
}

/// Whether no deferred work is waiting or running.
pub fn is_idle() -> bool {
    RUNNING.load(Ordering::SeqCst) == 0
}

/// Starts the work waiting for the answer, then waits until nothing deferred is
/// running, at most [`SETTLE_WITHIN`]; what is still running then is left to
/// run (and logged).
pub async fn settle() {
    let waiting = std::mem::take(&mut *WAITING.lock().unwrap_or_else(|e| e.into_inner()));
    for (work, running) in waiting {
        start(work, running);
    }
    let idle = async {
        loop {
            let finished = FINISHED.notified();
            if is_idle() {
                return;
            }
            finished.await;
        }
    };
    if tokio::time::timeout(SETTLE_WITHIN, idle).await.is_err() {
        tracing::warn!(
            running = RUNNING.load(Ordering::SeqCst),
            "deferred work still running after the answer's settle time"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settle_waits_for_what_was_deferred() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let tx = tx.clone();
            defer(async move {
                tokio::time::sleep(Duration::from_millis(20 * i)).await;
                tx.send(i).unwrap();
            });
        }
        settle().await;
        let mut done: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        done.sort();
        assert_eq!(done, [0, 1, 2]);
        assert!(is_idle());
    }
}
