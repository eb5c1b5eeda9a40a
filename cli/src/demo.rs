//! `xinfang up --demo`: the whole Wuxi example city (`deploy/wuxi/`: the city 320200 as hub and
//! its seven districts and counties, each its own node with its own nats-server, linked as leaf
//! nodes), with a demo petition submitted every few seconds to one district after another.
//! Some happened in another district and are forwarded there (属地), some are group petitions
//! (群体访) that the district reports to the city at once, so the city office's inbox fills.
//! The organs work the cases they get ([`work`]): most are accepted, some refused, then
//! replied to and rated by the petitioner; every fifth petition repeats an earlier one, so the
//! offices' indicators (满意率, 参评率, 重复信访率 …) move on the demo's Prometheus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use xinfang_shared::ids::IdNumber;
use xinfang_shared::CancellationToken;

/// The gap between two demo petitions.
const EVERY: Duration = Duration::from_secs(3);

/// Writes the example node files into `DATA/files`, each granting the demo's staff token
/// (`bureau` and `office`, DESIGN.md §11), and returns that directory and the token.
pub fn write_city(data: &Path) -> Result<(PathBuf, String), String> {
    let dir = data.join("files");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let token = secret_file(data, "staff.token")?;
    let auth = format!(
        "\n# the demo's staff credential (DATA/staff.token)\n[[auth.tokens]]\nname = \"demo\"\nroles = [\"bureau\", \"office\"]\nsha256 = \"{}\"\n",
        xinfang_shared::access::token_sha256(&token)
    );
    // the pages' users, all with the password in DATA/staff.password: `clerk` (信访局 and
    // 联席办) and one per organ of the node, signed in as the organ's id
    let hash = xinfang_shared::access::hash_password(&secret_file(data, "staff.password")?);
    for (code, text) in crate::wuxi::FILES {
        let mut users = format!(
            "\n[[auth.users]]\nlogin = \"clerk\"\nname = \"信访局值班员\"\nroles = [\"bureau\", \"office\"]\npassword_hash = \"{hash}\"\n"
        );
        for (id, name) in organs_of(text, code) {
            users.push_str(&format!(
                "\n[[auth.users]]\nlogin = \"{id}\"\nname = \"{name}\"\nroles = [\"organ\"]\norgan_id = \"{id}\"\npassword_hash = \"{hash}\"\n"
            ));
        }
        let path = dir.join(format!("{code}.toml"));
        std::fs::write(&path, format!("{text}{auth}{users}")).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok((dir, token))
}

/// The organs (id, name) of node `code` in a node file.
fn organs_of(text: &str, code: &str) -> Vec<(String, String)> {
    let Ok(doc) = text.parse::<toml::Table>() else { return Vec::new() };
    let organs = doc.get("organs").and_then(|o| o.as_array()).cloned().unwrap_or_default();
    organs
        .iter()
        .filter(|o| o.get("node").and_then(|n| n.as_str()) == Some(code))
        .filter_map(|o| Some((o.get("id")?.as_str()?.to_string(), o.get("name")?.as_str()?.to_string())))
        .collect()
}

/// A demo secret in `DATA/<name>` (the staff token, the pages' password): made at the first
/// run, kept after.
fn secret_file(data: &Path, name: &str) -> Result<String, String> {
    let path = data.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let token = crate::credentials::new_token();
    std::fs::create_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
    std::fs::write(&path, format!("{token}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(token)
}

/// NATS request headers with the demo's staff token.
fn staff(token: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    headers
}

/// The districts and counties of the example, by division code.
const DISTRICTS: &[(&str, &str)] = &[
    ("320205", "锡山区"),
    ("320206", "惠山区"),
    ("320211", "滨湖区"),
    ("320213", "梁溪区"),
    ("320214", "新吴区"),
    ("320281", "江阴市"),
    ("320282", "宜兴市"),
];

fn district_name(code: &str) -> &str {
    DISTRICTS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n).unwrap_or(code)
}

/// (category, kind, title, content); `{}` in the content is the district's name.
const SAMPLES: &[(&str, &str, &str, &str)] = &[
    (
        "urban_construction",
        "appeal_request",
        "小区电梯长期故障",
        "{}某小区3号楼电梯停运两个月，物业与住建部门均未处理，请求督促维修。",
    ),
    (
        "labor_social_security",
        "appeal_request",
        "工资被拖欠",
        "{}某建筑公司拖欠农民工工资三个月，共计四万余元，请求协调支付。",
    ),
    ("environment", "complaint_report", "夜间施工噪音扰民", "{}某工地连续多日夜间施工至凌晨，严重影响周边居民休息。"),
    ("transport", "suggestion", "建议增设公交站点", "建议在{}某小区门口增设公交站点，方便老年人出行。"),
    ("urban_construction", "appeal_request", "老旧小区屋面漏水", "{}某老旧小区屋面漏水多年，请求纳入改造计划。"),
    ("education", "appeal_request", "入学划片争议", "{}某小区适龄儿童被划入较远学校，请求重新核定学区。"),
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

/// A node the demo submits to: its code, its NATS URL and intake's base URL (from its ready
/// line).
pub struct Target {
    pub code: String,
    pub nats_url: String,
    pub http: String,
}

impl Target {
    /// The node of a ready line (`xinfang up`'s, or one entry of `up --city`'s `nodes`).
    pub fn from_ready_line(code: &str, line: &Value) -> Option<Target> {
        Some(Target {
            code: code.to_string(),
            nats_url: line["nats_url"].as_str()?.to_string(),
            http: line["http"].as_str()?.to_string(),
        })
    }
}

/// What the `i`-th demo petition at `home` is: where it happened, how many came, and what the
/// demo says about it. One in six is a group, one in four happened in another district.
fn shape(i: usize, home: &str) -> (String, u32, String) {
    if i % 6 == 4 {
        return (home.to_string(), 6, "（6人群体访：即时上报市信访局）".into());
    }
    if i % 4 == 1 {
        let others: Vec<&(&str, &str)> = DISTRICTS.iter().filter(|(c, _)| *c != home).collect();
        if !others.is_empty() {
            let (code, name) = others[i % others.len()];
            return (code.to_string(), 1, format!("（事发地在{name}：按属地转送 {code}）"));
        }
    }
    (home.to_string(), 1, String::new())
}

fn petition(i: usize, division: &str, headcount: u32) -> (Value, &'static str) {
    let (category, kind, title, content) = SAMPLES[i % SAMPLES.len()];
    let channel = ["online", "hotline_12345", "letter", "visit"][i % 4];
    let mut rng = rand::rng();
    let petition = serde_json::json!({
        "channel": channel,
        "petitioners": [{"name": "演示用户", "id_number": demo_id_number(&mut rng), "phone": "13800000000"}],
        "headcount": headcount,
        "location": {"division": division, "address": "演示地址"},
        "category": category,
        "kind": kind,
        "title": title,
        "content": content.replace("{}", district_name(division)),
    });
    (petition, title)
}

/// Submits a demo petition over NATS every few seconds, to each target in turn, until
/// `shutdown`.
pub async fn feed(targets: Vec<Target>, token: String, shutdown: CancellationToken) {
    let mut clients = Vec::new();
    for t in &targets {
        match async_nats::connect(&t.nats_url).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!("demo: cannot connect to {} ({}): {e}", t.nats_url, t.code);
                return;
            }
        }
    }
    if targets.is_empty() {
        return;
    }
    let mut last: Vec<Option<Value>> = vec![None; targets.len()];
    for i in 0.. {
        let (t, client) = (&targets[i % targets.len()], &clients[i % targets.len()]);
        let (division, headcount, mut note) = shape(i, &t.code);
        let (mut body, title) = petition(i, &division, headcount);
        // every fifth: the same petitioner about the same matter again (a repeat, 重复信访)
        let repeat = i % 5 == 3 && last[i % targets.len()].is_some();
        if repeat {
            body = last[i % targets.len()].clone().unwrap_or(body);
            note = "（重复信访）".into();
        } else if headcount == 1 && division == t.code {
            last[i % targets.len()] = Some(body.clone());
        }
        let subject = format!("xf.{}.api.petition.submit", t.code);
        let payload = serde_json::to_vec(&body).expect("json").into();
        match client.request_with_headers(subject, staff(&token), payload).await {
            Ok(reply) => {
                let v: Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
                if v["ok"] == true {
                    let case = v["case_id"].as_str().unwrap_or("?");
                    let code = v["query_code"].as_str().unwrap_or("?");
                    eprintln!(
                        "demo: {} 已登记 {case}「{title}」{note} 查询码 {code} — {}/v1/cases/{case}/status?query_code={code}",
                        district_name(&t.code),
                        t.http,
                    );
                    if !repeat && division == t.code {
                        let (node, case) = (t.code.clone(), case.to_string());
                        tokio::spawn(work(client.clone(), token.clone(), node, case, shutdown.clone()));
                    }
                } else {
                    eprintln!("demo: {} refused: {v}", t.code);
                }
            }
            Err(e) => eprintln!("demo: {} submit failed: {e}", t.code),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// What the organ and the petitioner do with a demo case: after a few seconds the organ it was
/// routed to accepts it (one in six it refuses as not a petition), replies some seconds later,
/// and three petitioners in four rate the reply. All over the node's NATS API, as staff would.
async fn work(client: async_nats::Client, token: String, node: String, case: String, shutdown: CancellationToken) {
    let pause = |lo: u64, hi: u64| Duration::from_millis(rand::rng().random_range(lo * 1000..hi * 1000));
    let call = |endpoint: &'static str, body: Value| {
        let (client, node, headers) = (client.clone(), node.clone(), staff(&token));
        async move {
            let subject = format!("xf.{node}.api.{endpoint}");
            let payload = serde_json::to_vec(&body).expect("json").into();
            let reply = client.request_with_headers(subject, headers, payload).await.ok()?;
            serde_json::from_slice::<Value>(&reply.payload).ok().filter(|v| v["ok"] == true)
        }
    };
    let sleep = |d: Duration| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        }
    };
    // routed to an organ of this node
    let mut organ = None;
    for _ in 0..20 {
        if !sleep(pause(2, 4)).await {
            return;
        }
        let view = call("case.get", serde_json::json!({"case_id": case})).await;
        match view.as_ref().map(|v| (v["state"].as_str().unwrap_or(""), v["organ_id"].as_str())) {
            Some(("with_organ", Some(o))) => {
                organ = Some(o.to_string());
                break;
            }
            Some(("awaiting_route", _)) | None => continue,
            Some(_) => return,
        }
    }
    let Some(organ) = organ else { return };
    let actor = serde_json::json!({"kind": "organ", "id": organ});
    let act = |body: Value| call("case.act", body);
    let roll: u32 = rand::rng().random_range(0..24);
    if roll < 4 {
        let refuse = serde_json::json!({"case_id": case, "action": "reject", "actor": actor,
            "reason_code": "not_a_petition", "note": "经审查不属于信访事项"});
        act(refuse).await;
        return;
    }
    if act(serde_json::json!({"case_id": case, "action": "accept", "actor": actor})).await.is_none()
        || !sleep(pause(5, 15)).await
    {
        return;
    }
    let outcome = ["supported", "partly_supported", "explained", "not_supported"][roll as usize % 4];
    let reply = serde_json::json!({"case_id": case, "action": "reply", "actor": actor,
        "outcome": outcome, "summary": "已调查核实并书面答复"});
    if act(reply).await.is_none() || roll % 4 == 3 || !sleep(pause(3, 8)).await {
        return;
    }
    // about 满意率 80 %: six in ten satisfied, two basically, two not
    let satisfaction = match rand::rng().random_range(0..10) {
        0..=5 => "satisfied",
        6 | 7 => "basically_satisfied",
        _ => "unsatisfied",
    };
    let petitioner = serde_json::json!({"kind": "petitioner", "id": "self"});
    act(serde_json::json!({"case_id": case, "action": "evaluate", "actor": petitioner, "satisfaction": satisfaction}))
        .await;
}
