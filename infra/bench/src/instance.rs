//! One function instance: a `bootstrap` process started the way Lambda starts
//! it (a clean environment with the `AWS_LAMBDA_*` variables) and the Runtime
//! API it polls. The process is killed when the instance is stopped or dropped.
//!
//! `std::process` rather than tokio's: tokio's `process` feature would change
//! the features of the tokio the functions are built with in the same build.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;

use crate::{
    quota,
    runtime_api::{Outcome, RuntimeApi, Signal},
    session::Target,
};

/// Longest wait for the first `next`.
const INIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a running bootstrap is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A started function.
pub struct Instance {
    name: String,
    api: RuntimeApi,
    child: Child,
    pid: u32,
    log: PathBuf,
    /// Spawn until the first `GET …/invocation/next`.
    pub init: Duration,
}

impl Instance {
    /// Spawns `target` (its binary with its settings plus the Lambda
    /// variables, in its cgroup if it has one), appending its output to its
    /// log, and waits until it polls for its first event.
    pub async fn launch(target: &Target) -> Result<Instance> {
        let (name, binary, log) = (target.name.as_str(), &target.binary, &target.log);
        let (api, mut signals) = RuntimeApi::start(name).await?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .envs(target.env.iter().map(|(k, v)| (k, v)))
            .envs(lambda_env(name, &api.address, binary, target.memory_mb))
            .current_dir(binary.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group, so that stopping it also stops anything it started.
            .process_group(0);
        // Kept open until the spawn returns: the child joins the group before it runs anything.
        let procs = target
            .cgroup
            .as_deref()
            .map(|path| quota::join_on_exec(&mut cmd, path))
            .transpose()?;
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        drop(procs);
        let pid = child.id();
        let mut instance = Instance {
            name: name.to_string(),
            api,
            child,
            pid,
            log: log.to_path_buf(),
            init: Duration::ZERO,
        };
        let ready = tokio::select! {
            signal = signals.recv() => match signal {
                Some(Signal::Ready(at)) => at,
                Some(Signal::InitError(e)) => bail!("{name}: init error {e}; see {}", log.display()),
                None => bail!("{name}: the Runtime API server stopped"),
            },
            status = exited(&mut instance.child) => bail!("{name}: exited during init ({status}); see {}", log.display()),
            _ = tokio::time::sleep(INIT_TIMEOUT) => bail!("{name}: no `next` within {INIT_TIMEOUT:?}; see {}", log.display()),
        };
        instance.init = ready.saturating_duration_since(spawned);
        Ok(instance)
    }

    /// Sends one event and waits (at most `timeout`) for the answer.
    pub async fn invoke(&mut self, event: Bytes, timeout: Duration) -> Result<(Duration, Outcome)> {
        tokio::select! {
            answer = self.api.invoke(event, timeout) => {
                answer.with_context(|| format!("{}: invocation failed; see {}", self.name, self.log.display()))
            }
            status = exited(&mut self.child) => {
                bail!("{}: exited during an invocation ({status}); see {}", self.name, self.log.display())
            }
        }
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: reading {path}", self.name))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{}: no VmHWM in {path}", self.name))
    }

    /// Kills the process and reaps it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(group) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) with a negative pid signals that process group, which is
            // the bootstrap's own (see `process_group(0)`); no memory is involved.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        // SIGKILL cannot be ignored, so the wait that reaps the bootstrap returns at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resolves when `child` has exited (checked every [`EXIT_POLL`]).
async fn exited(child: &mut Child) -> ExitStatus {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// The variables Lambda sets for a custom runtime on `provided.al2023`.
fn lambda_env(name: &str, api: &str, binary: &Path, memory_mb: u32) -> Vec<(String, String)> {
    let task_root = binary
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    [
        ("AWS_LAMBDA_RUNTIME_API", api),
        ("AWS_LAMBDA_FUNCTION_NAME", name),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", &memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]picture-bench",
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("LAMBDA_TASK_ROOT", &task_root),
        ("_HANDLER", "bootstrap"),
        ("TZ", ":UTC"),
        ("LANG", "en_US.UTF-8"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
