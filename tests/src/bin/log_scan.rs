//! `xinfang-log-scan DIR…`: reads every `*.log` file under the directories (the test suite's
//! logs) and fails, naming file and line, if any line holds an unmasked resident ID number or
//! mobile number (issue 16). A scan that read no lines fails too: it would prove nothing.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use xinfang_tests::log_scan::findings;

fn logs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            logs(&p, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
}

fn main() -> ExitCode {
    let mut files = Vec::new();
    for dir in std::env::args().skip(1) {
        logs(Path::new(&dir), &mut files);
    }
    let (mut lines, mut found) = (0u64, 0u64);
    for f in &files {
        let Ok(file) = std::fs::File::open(f) else { continue };
        for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let Ok(line) = line else { break };
            lines += 1;
            for hit in findings(&String::from_utf8_lossy(&line)) {
                found += 1;
                if found <= 20 {
                    eprintln!("{}:{}: unmasked {} {}", f.display(), n + 1, hit.kind, hit.masked);
                }
            }
        }
    }
    println!("log scan: {} files, {lines} lines, {found} unmasked ID numbers or phones", files.len());
    if lines == 0 {
        eprintln!("log scan: no log lines to read — the logs were not written where the scan looks");
        return ExitCode::FAILURE;
    }
    if found > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
