//! The CPU a Lambda function really has: one vCPU at 1,769 MB of memory and
//! proportionally less below it (256 MB ≈ 0.145 of a core), reproduced with
//! the CFS bandwidth controller of Linux cgroups.
//!
//! Each throttled function gets a cgroup of its own, created before its
//! bootstrap starts and removed after it stopped; only the bootstrap is in it
//! (not the harness, not the stack). The bootstrap joins it between fork and
//! exec, by writing `0` (itself) to the group's `cgroup.procs`, so none of its
//! work runs outside the share.
//! - **cgroup v2** (`/sys/fs/cgroup` is the unified hierarchy):
//!   `/sys/fs/cgroup/NAME/cpu.max` = `QUOTA 100000`. The `cpu` controller must
//!   be enabled for children in `/sys/fs/cgroup/cgroup.subtree_control`; it is
//!   enabled (`+cpu`) if it is not (refused in a namespace root that holds
//!   processes itself: then v1 is tried).
//! - **cgroup v1**: `/sys/fs/cgroup/cpu/NAME/cpu.cfs_period_us` = `100000`,
//!   `cpu.cfs_quota_us` = `QUOTA`.
//!
//! Both need root (or a delegated hierarchy). Where neither is writable,
//! [`Hierarchy::detect`] says why and the benchmark reports unthrottled
//! figures only.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// The CFS period (µs); the quota is a share of it.
pub const PERIOD_US: u64 = 100_000;
/// The memory size at which Lambda gives a whole vCPU (MB).
pub const FULL_CORE_MB: f64 = 1769.0;
const ROOT: &str = "/sys/fs/cgroup";

/// A function's CPU share.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Share {
    pub memory_mb: u32,
    /// Fraction of one core.
    pub cores: f64,
    pub quota_us: u64,
    pub period_us: u64,
}

impl Share {
    /// The share Lambda gives a function of `memory_mb`.
    pub fn of(memory_mb: u32) -> Share {
        let cores = f64::from(memory_mb) / FULL_CORE_MB;
        Share {
            memory_mb,
            cores,
            quota_us: (cores * PERIOD_US as f64).round() as u64,
            period_us: PERIOD_US,
        }
    }
}

/// A writable cgroup hierarchy with the `cpu` controller.
#[derive(Debug)]
pub enum Hierarchy {
    V2(PathBuf),
    V1(PathBuf),
}

impl Hierarchy {
    /// The first of v2 and v1 in which a throttled group can be made (tried
    /// with a probe group); otherwise why neither can.
    pub fn detect() -> Result<Hierarchy> {
        let root = Path::new(ROOT);
        let mut why = Vec::new();
        for candidate in [
            Hierarchy::V2(root.to_path_buf()),
            Hierarchy::V1(root.join("cpu")),
        ] {
            match candidate.usable() {
                Ok(()) => return Ok(candidate),
                Err(e) => why.push(format!("{}: {e:#}", candidate.version())),
            }
        }
        bail!("{}", why.join("; "))
    }

    /// `v2` or `v1`.
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V2(_) => "v2",
            Hierarchy::V1(_) => "v1",
        }
    }

    /// Creates the group `name` limited to `share`.
    pub fn create(&self, name: &str, share: Share) -> Result<Cgroup> {
        let dir = match self {
            Hierarchy::V2(root) | Hierarchy::V1(root) => root.join(name),
        };
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let group = Cgroup { dir, share };
        let limits = match self {
            Hierarchy::V2(_) => {
                vec![("cpu.max", format!("{} {}", share.quota_us, share.period_us))]
            }
            Hierarchy::V1(_) => vec![
                ("cpu.cfs_period_us", share.period_us.to_string()),
                ("cpu.cfs_quota_us", share.quota_us.to_string()),
            ],
        };
        for (file, value) in limits {
            let path = group.dir.join(file);
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(group)
    }

    fn usable(&self) -> Result<()> {
        match self {
            Hierarchy::V2(root) => {
                let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
                    .context("not the unified hierarchy")?;
                if !controllers.split_whitespace().any(|c| c == "cpu") {
                    bail!("no cpu controller in {}/cgroup.controllers", root.display());
                }
                let subtree = root.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&subtree).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == "cpu") {
                    std::fs::write(&subtree, "+cpu")
                        .with_context(|| format!("enabling cpu in {}", subtree.display()))?;
                }
            }
            Hierarchy::V1(root) if !root.join("cpu.cfs_quota_us").is_file() => {
                bail!("no cpu controller at {}", root.display())
            }
            Hierarchy::V1(_) => {}
        }
        let probe = format!("picture-bench-probe-{}", std::process::id());
        self.create(&probe, Share::of(FULL_CORE_MB as u32))
            .map(drop)
    }
}

/// A cgroup made by [`Hierarchy::create`]; removed when dropped (its
/// processes must have exited by then).
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    pub share: Share,
}

impl Cgroup {
    /// The file a process writes `0` to in order to join the group.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

/// Makes the child of `cmd` join a group between fork and exec, so that none of
/// its work runs outside the share: `procs` is the group's `cgroup.procs`
/// ([`Cgroup::procs`]). The caller keeps the returned file open until the spawn
/// returns (the child writes to it).
pub fn join_on_exec(cmd: &mut std::process::Command, procs: &Path) -> Result<std::fs::File> {
    use std::os::{fd::AsRawFd, unix::process::CommandExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(procs)
        .with_context(|| format!("opening {}", procs.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: the hook runs in the child between fork and exec and makes a single
    // write(2) of a static buffer to a descriptor that stays open until the spawn
    // returns (the caller keeps the file): async-signal-safe, no allocation.
    unsafe {
        cmd.pre_exec(move || match libc::write(fd, b"0".as_ptr().cast(), 1) {
            1 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    Ok(file)
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A reaped process can linger in the group for a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: could not remove the cgroup {}", self.dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_proportional_to_memory() {
        let s = Share::of(256);
        assert_eq!(s.quota_us, 14_471);
        assert!((s.cores - 0.1447).abs() < 1e-4);
        assert_eq!(Share::of(1769).quota_us, PERIOD_US);
        assert_eq!(Share::of(512).quota_us, 28_943);
    }
}
