//! One user's loop: a fixed cycle of steps (offset per user, so every step
//! runs at every moment), each checking that the generation ends as its prompt
//! says it should.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{Answer, Api, Call, Sim};

const GENERATE: &str = "POST /api/v1/generate";
const STATUS: &str = "GET /api/v1/generate/{id}/status";
const CANCEL: &str = "DELETE /api/v1/generate/{id}";
const WEBHOOK: &str = "POST /api/v1/generate/webhook (redelivered)";
/// How long a generation may stay open before the soak reports it and moves on.
const SETTLE: Duration = Duration::from_secs(30);

/// What a user does next.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `waitForResult: true`.
    Sync,
    /// 202, then two concurrent status polls per round until terminal.
    Async,
    /// `[sim:fail]`: ends `failed`.
    Fail,
    /// `[sim:hang]`, then `DELETE`: ends `cancelled`.
    Cancel,
    /// `[sim:slow=1500]`, synchronous.
    Slow,
    /// The same request three times under one `Idempotency-Key`.
    Idempotent,
    /// A synchronous generation whose final webhook the simulator sends again.
    Redeliver,
    /// History, images, balance and models at once.
    Reads,
}

const CYCLE: [Step; 8] = [
    Step::Sync,
    Step::Async,
    Step::Reads,
    Step::Fail,
    Step::Idempotent,
    Step::Cancel,
    Step::Slow,
    Step::Redeliver,
];

/// A simulated user with its token.
pub struct User {
    pub n: usize,
    pub token: String,
    pub model: String,
    pub api: Arc<Api>,
    pub sim: Arc<Sim>,
}

impl User {
    /// Runs steps until `end`; the step under way when it passes is finished.
    pub async fn run(self, end: Instant) {
        let mut i = 0;
        while Instant::now() < end {
            let step = CYCLE[(self.n + i) % CYCLE.len()];
            if let Err(what) = self.step(step, i).await {
                self.api
                    .rec
                    .anomaly(format!("user {} {step:?}: {what}", self.n));
            }
            i += 1;
        }
    }

    async fn step(&self, step: Step, i: usize) -> Result<(), String> {
        let prompt = |marker: &str| format!("soak user {} step {i} {marker}", self.n);
        match step {
            Step::Sync => self.sync(&prompt("")).await.map(drop),
            Step::Slow => self.sync(&prompt("[sim:slow=1500]")).await.map(drop),
            Step::Async => {
                let a = self.generate(&prompt(""), false, None).await;
                self.until_done(&accepted(&a)?, "completed").await
            }
            Step::Fail => {
                let a = self.generate(&prompt("[sim:fail]"), false, None).await;
                self.until_done(&accepted(&a)?, "failed").await
            }
            Step::Cancel => self.cancel(&prompt("[sim:hang]")).await,
            Step::Idempotent => self.idempotent(&prompt("")).await,
            Step::Redeliver => self.redeliver(&prompt("")).await,
            Step::Reads => {
                self.reads().await;
                Ok(())
            }
        }
    }

    async fn generate(&self, prompt: &str, wait: bool, key: Option<&str>) -> Answer {
        let body = json!({"prompt": prompt, "modelId": self.model, "waitForResult": wait});
        self.api
            .send(Call {
                route: GENERATE,
                path: "/api/v1/generate".into(),
                token: &self.token,
                body: Some(body),
                idempotency_key: key,
            })
            .await
    }

    async fn get(&self, route: &'static str, path: String) -> Answer {
        self.api
            .send(Call {
                route,
                path,
                token: &self.token,
                body: None,
                idempotency_key: None,
            })
            .await
    }

    async fn status(&self, id: &str) -> Answer {
        self.get(STATUS, format!("/api/v1/generate/{id}/status"))
            .await
    }

    /// A synchronous generation that must complete; its id.
    async fn sync(&self, prompt: &str) -> Result<String, String> {
        let a = self.generate(prompt, true, None).await;
        let id = match a.status {
            201 if a.str("status") == "completed" => return Ok(a.str("generationId").into()),
            202 => a.str("generationId").to_string(),
            _ => return Err(format!("sync generate answered {}", a.describe())),
        };
        self.until_done(&id, "completed").await?;
        Ok(id)
    }

    /// Polls (two requests at once) until the generation is terminal, which must be `want`.
    async fn until_done(&self, id: &str, want: &str) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        let mut last = String::new();
        while Instant::now() < deadline {
            let (a, b) = tokio::join!(self.status(id), self.status(id));
            for s in [&a, &b] {
                match s.str("status") {
                    "completed" | "failed" | "cancelled" if s.str("status") == want => {
                        return Ok(());
                    }
                    "completed" | "failed" | "cancelled" => {
                        return Err(format!("{id} ended {}, not {want}", s.describe()));
                    }
                    _ => last = s.describe(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(format!("{id} still open after {SETTLE:?}: {last}"))
    }

    async fn cancel(&self, prompt: &str) -> Result<(), String> {
        let id = accepted(&self.generate(prompt, false, None).await)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = self
            .api
            .send(Call {
                route: CANCEL,
                path: format!("/api/v1/generate/{id}"),
                token: &self.token,
                body: None,
                idempotency_key: None,
            })
            .await;
        if a.status != 200 || a.str("status") != "cancelled" {
            return Err(format!("cancel of {id} answered {}", a.describe()));
        }
        self.until_done(&id, "cancelled").await
    }

    /// First request and a concurrent retry, then a later retry: one generation.
    async fn idempotent(&self, prompt: &str) -> Result<(), String> {
        let key = Uuid::new_v4().to_string();
        let (first, racing) = tokio::join!(
            self.generate(prompt, false, Some(&key)),
            self.generate(prompt, false, Some(&key))
        );
        // Either may claim the key; the other replays its answer or finds it in progress.
        let (winner, other) = match accepted(&first) {
            Ok(_) => (first, racing),
            Err(_) => (racing, first),
        };
        let id = accepted(&winner)?;
        let in_progress = other.status == 409 && other.str("code") == "IDEMPOTENCY_IN_PROGRESS";
        if !in_progress && other.str("generationId") != id {
            return Err(format!("concurrent retry answered {}", other.describe()));
        }
        let retry = self.generate(prompt, false, Some(&key)).await;
        let replayed = retry
            .headers
            .get("idempotency-replayed")
            .is_some_and(|v| v == "true");
        if retry.str("generationId") != id || !replayed {
            return Err(format!("retry of {id} answered {}", retry.describe()));
        }
        self.until_done(&id, "completed").await
    }

    /// A completed generation gets its final webhook again: it stays as it was.
    async fn redeliver(&self, prompt: &str) -> Result<(), String> {
        let id = self.sync(prompt).await?;
        let before = self.status(&id).await;
        let prediction = match self.sim.find_prediction(&id).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(format!("no prediction found for {id}")),
            Err(e) => return Err(format!("prediction search for {id}: {e}")),
        };
        let started = Instant::now();
        let status = self
            .sim
            .redeliver(&prediction)
            .await
            .map_err(|e| format!("redelivery of {prediction}: {e}"))?;
        self.api.rec.request(WEBHOOK, status, started.elapsed());
        if !(200..300).contains(&status) {
            return Err(format!("redelivered webhook of {id} answered {status}"));
        }
        let after = self.status(&id).await;
        let image = |a: &Answer| a.body["image"]["id"].clone();
        if after.str("status") != "completed" || image(&after) != image(&before) {
            return Err(format!("{id} after redelivery: {}", after.describe()));
        }
        Ok(())
    }

    async fn reads(&self) {
        let _ = tokio::join!(
            self.get(
                "GET /api/v1/generate/history",
                "/api/v1/generate/history?limit=20".into()
            ),
            self.get("GET /api/v1/images", "/api/v1/images".into()),
            self.get(
                "GET /api/v1/credits/balance",
                "/api/v1/credits/balance".into()
            ),
            self.get("GET /api/v1/models", "/api/v1/models".into()),
        );
    }
}

/// The id of an accepted (202) generation.
fn accepted(a: &Answer) -> Result<String, String> {
    match (a.status, &a.body["generationId"]) {
        (202, Value::String(id)) => Ok(id.clone()),
        _ => Err(format!("generate answered {}", a.describe())),
    }
}
