//! Processes under a parent, read from `/proc` (Linux): how the tests and the fault campaign
//! find the services and the nats-server that `xinfang up` runs.

/// `(pid, parent pid, command name)` of every process.
fn table() -> Vec<(i32, i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid …": the name may hold spaces, so split at its last ')'
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect()
}

/// Every process below `root` (children, their children, …) with its command name.
pub fn descendants(root: i32) -> Vec<(i32, String)> {
    let table = table();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, comm) in &table {
            if *ppid == p {
                out.push((*pid, comm.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

/// The pid of the process below `root` whose command name is `comm` (truncated by the kernel
/// to 15 bytes, e.g. `xinfang-routing`, `nats-server`).
pub fn find(root: i32, comm: &str) -> Option<i32> {
    descendants(root).into_iter().find(|(_, c)| c == comm).map(|(p, _)| p)
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}
