//! `trainer train --nproc G` (or `devices = [..]` in a config): G local processes of this same binary,
//! each told its rank as `torchrun` would tell it (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); rank 0 hosts the store. The launcher waits for
//! them all: when one fails, the others are stopped after a grace period (they normally fail on their
//! own at their next collective, naming the rank they lost); a Ctrl-C or SIGTERM is passed on once as
//! SIGTERM (every rank checkpoints and stops at the same step), a second one kills them.

use std::ffi::OsString;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("--nproc {0}: must be at least 1")]
    Nproc(usize),
    #[error("finding a free port for the rendezvous store: {0}")]
    Port(std::io::Error),
    #[error("starting rank {rank} ({exe}): {source}")]
    Spawn { rank: usize, exe: String, source: std::io::Error },
    #[error("rank {rank} of {world} {how}{others}")]
    Failed { rank: usize, world: usize, how: String, others: String },
}

/// Set by the launcher's own children so that they train instead of launching again.
pub const LAUNCHED_ENV: &str = "DLCV_LAUNCHED";

/// How long the other ranks get to stop by themselves after one failed.
const GRACE: Duration = Duration::from_secs(30);

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// Runs `args` (this binary's arguments, without `--nproc`) as `nproc` ranks and waits for them.
pub fn launch(nproc: usize, args: &[OsString]) -> Result<(), LaunchError> {
    if nproc == 0 {
        return Err(LaunchError::Nproc(nproc));
    }
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map_err(LaunchError::Port)?.port();
    let exe = std::env::current_exe().unwrap_or_else(|_| "trainer".into());
    let _ = ctrlc::set_handler(|| {
        SIGNALS.fetch_add(1, Ordering::SeqCst);
    });
    let mut children: Vec<Option<Child>> = vec![];
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("GROUP_RANK", "0")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env(LAUNCHED_ENV, "1")
            .env_remove("TORCHELASTIC_USE_AGENT_STORE");
        // a process group of their own: a terminal's Ctrl-C reaches the launcher, which passes it on once
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        match cmd.spawn() {
            Ok(c) => children.push(Some(c)),
            Err(source) => {
                kill_all(&mut children);
                return Err(LaunchError::Spawn { rank, exe: exe.display().to_string(), source });
            }
        }
    }
    tracing::info!("started {nproc} ranks of {} (store at 127.0.0.1:{port})", exe.display());
    let mut first_failure: Option<(usize, String)> = None;
    let mut failed_at: Option<Instant> = None;
    let mut forwarded = 0;
    loop {
        let signals = SIGNALS.load(Ordering::SeqCst);
        if signals > forwarded {
            forwarded = signals;
            if signals == 1 {
                eprintln!("launcher: passing the interrupt on to every rank (again to kill them)");
                for c in children.iter().flatten() {
                    super::ffi::terminate(c.id());
                }
            } else {
                kill_all(&mut children);
            }
        }
        let mut running = 0;
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            match c.try_wait() {
                Ok(Some(status)) => {
                    *slot = None;
                    if !status.success() && first_failure.is_none() {
                        let how = match status.code() {
                            Some(code) => format!("exited with status {code}"),
                            None => format!("was killed ({status})"),
                        };
                        first_failure = Some((rank, how));
                        failed_at = Some(Instant::now());
                    }
                }
                Ok(None) => running += 1,
                Err(_) => running += 1,
            }
        }
        if running == 0 {
            break;
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            eprintln!("launcher: the other ranks did not stop within {}s of the failure; killing them", GRACE.as_secs());
            kill_all(&mut children);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        None => Ok(()),
        Some((rank, how)) => {
            let others = if nproc > 1 { "; the other ranks were stopped".to_string() } else { String::new() };
            Err(LaunchError::Failed { rank, world: nproc, how, others })
        }
    }
}

fn kill_all(children: &mut [Option<Child>]) {
    for c in children.iter_mut().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
