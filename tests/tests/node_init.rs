//! Issue 15: `xinfang node init` writes a deployable node that `xinfang up` runs as it is: the
//! city and a district, each from its own directory, linked with the district's own secret once
//! the city's operator adds the printed line; a district whose line was not added is refused.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use xinfang_tests::up::UpNode;
use xinfang_tests::{binary, free_port};

/// Runs `xinfang node init` and returns what it printed.
fn init(args: &[&str]) -> String {
    let out =
        Command::new(binary("xinfang")).args(["node", "init", "--listen", "127.0.0.1:0"]).args(args).output().unwrap();
    assert!(out.status.success(), "node init {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn parent_connected(http: &reqwest::Client, node: &UpNode) -> bool {
    let Ok(r) = http.get(format!("{}/v1/node/links", node.http())).send().await else { return false };
    let v: Value = r.json().await.unwrap_or_default();
    v["parent"]["connected"] == true
}

fn start(dir: &Path) -> UpNode {
    UpNode::start(&dir.join("node.toml"), &dir.join("data"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_init_writes_nodes_that_up_runs_as_they_are_and_only_admitted_districts_link() {
    let root = tempfile::tempdir().unwrap();
    let leaf = format!("127.0.0.1:{}", free_port());
    let (city, binhu, liangxi) = (root.path().join("320200"), root.path().join("320211"), root.path().join("320213"));
    init(&["--code", "320200", "--out", city.to_str().unwrap(), "--leaf-listen", &leaf]);
    let url = format!("nats-leaf://{leaf}");
    let printed = init(&["--code", "320211", "--out", binhu.to_str().unwrap(), "--parent-url", &url]);
    init(&["--code", "320213", "--out", liangxi.to_str().unwrap(), "--parent-url", &url]);

    // the city's operator adds 滨湖区's line, not 梁溪区's
    let line = printed.lines().find_map(|l| l.strip_prefix("add to the parent's nats.leaf_users file: ")).unwrap();
    assert!(line.starts_with("320211 = \"$2"), "{line}");
    let users = city.join("leaf/leaf-users.toml");
    let text = std::fs::read_to_string(&users).unwrap() + line + "\n";
    std::fs::write(&users, text).unwrap();
    let unit = std::fs::read_to_string(binhu.join("systemd/xinfang-node-320211.service")).unwrap();
    assert!(unit.contains("Restart=always") && unit.contains("LimitNOFILE=65536"), "{unit}");
    assert!(unit.contains(&format!("up --config {}", binhu.join("node.toml").display())), "{unit}");
    let secret = std::fs::metadata(binhu.join("leaf/320211.secret")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(secret.permissions().mode() & 0o077, 0, "the secret is the owner's alone");
    let conf = binhu.join("nats-server.conf");
    assert_eq!(std::fs::metadata(&conf).unwrap().permissions().mode() & 0o077, 0, "it holds the secret");
    let conf = std::fs::read_to_string(conf).unwrap();
    assert!(conf.contains("domain: xf320211") && conf.contains("leaf_320211:"), "{conf}");
    assert!(conf.contains(&format!("@{leaf}")), "the district's server links to the city: {conf}");

    let city_node = start(&city);
    let (binhu_node, liangxi_node) = (start(&binhu), start(&liangxi));
    let http = xinfang_tests::staff_http(Duration::from_secs(5));
    let started = Instant::now();
    while !parent_connected(&http, &binhu_node).await {
        assert!(started.elapsed() < Duration::from_secs(30), "滨湖区 never linked to the city");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!parent_connected(&http, &liangxi_node).await, "梁溪区 is not on the city's leaf users: refused");
    // the Prometheus scrape job reads the target list `up` keeps: each service's address
    let scrape = std::fs::read_to_string(binhu.join("prometheus/scrape.yml")).unwrap();
    let targets_file = binhu.join("prometheus/targets.json");
    assert!(scrape.contains(&targets_file.display().to_string()) && scrape.contains("honor_labels: true"), "{scrape}");
    let targets: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&targets_file).unwrap()).unwrap();
    let services = binhu_node.ready["services"].as_object().unwrap();
    assert_eq!(targets.as_array().unwrap().len(), services.len(), "{targets}");
    for t in targets.as_array().unwrap() {
        let service = t["labels"]["service"].as_str().unwrap();
        assert_eq!(t["labels"]["node"], "320211");
        assert_eq!(format!("http://{}", t["targets"][0].as_str().unwrap()), services[service], "{targets}");
    }
    drop(city_node);
}
