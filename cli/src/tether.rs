//! `xinfang tether -- PROGRAM [ARGS…]` (internal, used by `xinfang up`): runs a program that
//! cannot watch its parent itself (nats-server) and stops it when this process's stdin, a pipe
//! from `up`, reaches its end — `up` is gone, even by SIGKILL. SIGTERM/SIGINT are passed on;
//! the exit code is the program's. Returns the code rather than exiting through the runtime,
//! which would wait for the stdin read that cannot be cancelled.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

/// How long the program gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

pub async fn main(program: OsString, args: Vec<OsString>) -> i32 {
    let mut child = match Command::new(&program).args(&args).stdin(Stdio::null()).kill_on_drop(true).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xinfang tether: starting {}: {e}", program.to_string_lossy());
            return 1;
        }
    };
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return 1;
    };
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            status = child.wait() => return code(status.ok()),
            _ = term.recv() => return stop(&mut child).await,
            _ = int.recv() => return stop(&mut child).await,
            read = stdin.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    eprintln!("xinfang tether: parent gone; stopping {}", program.to_string_lossy());
                    return stop(&mut child).await;
                }
            }
        }
    }
}

async fn stop(child: &mut Child) -> i32 {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(status) => code(status.ok()),
        Err(_) => {
            let _ = child.kill().await;
            1
        }
    }
}

fn code(status: Option<std::process::ExitStatus>) -> i32 {
    status.and_then(|s| s.code()).unwrap_or(1)
}
