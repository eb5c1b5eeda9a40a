//! A node run by `xinfang up` itself (its own nats-server or a shared one, the services
//! under its supervision), for tests and the fault campaign that kill what `up` runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{binary, procs};

/// `xinfang up --config FILE --data DIR`, with its ready line.
pub struct UpNode {
    pub child: Child,
    pub ready: Value,
    pub data: PathBuf,
}

impl UpNode {
    /// Starts `xinfang up` and waits for its ready line (panics if it exits first).
    pub fn start(config: &Path, data: &Path) -> Self {
        Self::start_with(config, data, &[])
    }

    /// [`UpNode::start`] with more arguments to `up` (`--nats-only`).
    pub fn start_with(config: &Path, data: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(binary("xinfang"))
            .args(["up", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(args)
            .env("XF_LOG", crate::SERVICE_LOG_LEVEL)
            .stdout(Stdio::piped())
            // XF_TEST_UP_STDERR=1 shows what the nodes log; else it goes to target/test-logs/up.log
            .stderr(if std::env::var_os("XF_TEST_UP_STDERR").is_some() {
                Stdio::inherit()
            } else {
                crate::service_log("up")
            })
            .spawn()
            .expect("xinfang up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = loop {
            let line = lines.next().expect("xinfang up exited before its ready line").expect("read");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["ready"] == true {
                    break v;
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, ready, data: data.to_path_buf() }
    }

    /// The node's NATS URL from the ready line.
    pub fn nats_url(&self) -> String {
        self.ready["nats_url"].as_str().unwrap_or_default().to_string()
    }

    /// Intake's base URL.
    pub fn http(&self) -> String {
        self.ready["http"].as_str().unwrap_or_default().to_string()
    }

    /// The address of service `name` from the ready line.
    pub fn service_url(&self, name: &str) -> String {
        self.ready["services"][name].as_str().unwrap_or_default().to_string()
    }

    /// The pid of the running process `comm` under `up` (`xinfang-routing`, `nats-server`).
    pub fn pid_of(&self, comm: &str) -> Option<i32> {
        procs::find(self.child.id() as i32, comm)
    }

    /// SIGTERM to `up` and wait for it (it stops its children first).
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for UpNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kernel's name of a service's process (15 bytes at most): `xinfang-notific`.
pub fn comm(service: &str) -> String {
    let full = format!("xinfang-{service}");
    full[..full.len().min(15)].to_string()
}
