//! `xinfang up --demo`: the Wuxi example node (滨湖区, from `deploy/wuxi/`) with a demo
//! petition submitted every few seconds, so a new user sees cases flow.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use xinfang_shared::ids::IdNumber;
use xinfang_shared::CancellationToken;

const WUXI_BINHU: &str = include_str!("../../deploy/wuxi/320211.toml");

/// Writes the demo node file into the data directory and returns its path.
pub fn write_config(data: Option<&Path>) -> Result<PathBuf, String> {
    let dir = data.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("data").join("320211"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("demo-node.toml");
    std::fs::write(&path, WUXI_BINHU).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

const SAMPLES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "urban_construction",
        "appeal_request",
        "320211",
        "小区电梯长期故障",
        "小区3号楼电梯停运两个月，物业与住建部门均未处理，请求督促维修。",
    ),
    (
        "labor_social_security",
        "appeal_request",
        "320211",
        "工资被拖欠",
        "某建筑公司拖欠农民工工资三个月，共计四万余元，请求协调支付。",
    ),
    (
        "environment",
        "complaint_report",
        "320211",
        "夜间施工噪音扰民",
        "蠡湖大道某工地连续多日夜间施工至凌晨，严重影响周边居民休息。",
    ),
    ("transport", "suggestion", "320211", "建议增设公交站点", "建议在太湖新城某小区门口增设公交站点，方便老年人出行。"),
    (
        "urban_construction",
        "appeal_request",
        "320213",
        "老旧小区屋面漏水",
        "梁溪区某老旧小区屋面漏水多年，请求纳入改造计划。",
    ),
];

fn demo_id_number(rng: &mut impl Rng) -> String {
    let body = format!(
        "320211{}{:02}{:02}{:03}",
        rng.random_range(1950..2000),
        rng.random_range(1..13),
        rng.random_range(1..29),
        rng.random_range(0..1000)
    );
    let check = IdNumber::check_char(&body) as char;
    format!("{body}{check}")
}

/// Submits a demo petition over NATS every 5 seconds until `shutdown`.
pub async fn feed(nats_url: String, node: String, http: String, shutdown: CancellationToken) {
    let Ok(client) = async_nats::connect(&nats_url).await else {
        eprintln!("demo: cannot connect to {nats_url}");
        return;
    };
    let subject = format!("xf.{node}.api.petition.submit");
    let mut i = 0usize;
    loop {
        let (category, kind, division, title, content) = SAMPLES[i % SAMPLES.len()];
        let channel = ["online", "hotline_12345", "letter", "visit"][i % 4];
        let petition = {
            let mut rng = rand::rng();
            serde_json::json!({
                "channel": channel,
                "petitioners": [{"name": "演示用户", "id_number": demo_id_number(&mut rng), "phone": "13800000000"}],
                "headcount": if i % 7 == 6 { 6 } else { 1 },
                "location": {"division": division, "address": "演示地址"},
                "category": category,
                "kind": kind,
                "title": title,
                "content": content,
            })
        };
        match client.request(subject.clone(), serde_json::to_vec(&petition).expect("json").into()).await {
            Ok(reply) => {
                let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
                if v["ok"] == true {
                    eprintln!(
                        "demo: 已登记 {} 「{title}」 查询码 {} — {http}/v1/cases/{}/status?query_code={}",
                        v["case_id"].as_str().unwrap_or("?"),
                        v["query_code"].as_str().unwrap_or("?"),
                        v["case_id"].as_str().unwrap_or("?"),
                        v["query_code"].as_str().unwrap_or("?"),
                    );
                } else {
                    eprintln!("demo: refused: {v}");
                }
            }
            Err(e) => eprintln!("demo: submit failed: {e}"),
        }
        i += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
