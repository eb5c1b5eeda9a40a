//! Open311 GeoReport v2 on intake (issue 19, first part): a hotline platform files a petition
//! with a form shaped as FixMyStreet's `perllib/Open311.pm` posts it (XML answers), the
//! request is in the ledger and routed, a third-party client (PyPI `georeport`) reads the
//! services and the request back, and every error path answers in the spec's format.

use std::time::Duration;

use serde_json::Value;
use xinfang_shared::access::token_sha256;
use xinfang_tests::{form_body, TestNode};

const HOTLINE: &str = "test-12345-platform-key";

fn hotline_token() -> String {
    format!(
        "\n[[auth.tokens]]\nname = \"hotline\"\nroles = [\"integration\"]\nchannel = \"hotline_12345\"\nsha256 = \"{}\"\n",
        token_sha256(HOTLINE)
    )
}

/// The fields FixMyStreet's Open311.pm sends for a new report (its `_populate_service_request_params`),
/// with this node's attributes.
/// A form's fields in the order they are sent.
type Fields = Vec<(&'static str, String)>;

fn fms_form(description: &str) -> Fields {
    vec![
        ("api_key", HOTLINE.into()),
        ("jurisdiction_id", "320211".into()),
        ("service_code", "urban_construction".into()),
        ("address_id", "320211".into()),
        ("address_string", "滨湖区蠡湖街道某小区".into()),
        ("first_name", "三".into()),
        ("last_name", "张".into()),
        ("email", "".into()),
        ("phone", "13812345678".into()),
        ("description", description.into()),
        ("media_url", "".into()),
        ("attribute[kind]", "appeal_request".into()),
        ("attribute[headcount]", "1".into()),
    ]
}

async fn post(base: &str, form: &[(&str, String)]) -> (u16, String) {
    let http = reqwest::Client::new();
    let body = form_body(form);
    let r = http
        .post(format!("{base}/open311/v2/requests.xml"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The text of the first `<tag>` in an XML answer.
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map(|(t, _)| t.to_string())
        .unwrap_or_default()
}

/// Runs `script` with PyPI `georeport` (tools/python, scripts/setup.sh --test-tools) against
/// `base`; the script prints JSON.
fn georeport(base: &str, script: &str) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let program = format!(
        "import json, sys\nfrom georeport import GeoReport\nxml = GeoReport('{base}/open311/v2', jurisdiction='320211', output_format='xml')\njs = GeoReport('{base}/open311/v2', jurisdiction='320211')\n{script}"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(program)
        .env("PYTHONPATH", root.join("tools/python"))
        .output()
        .expect("python3");
    assert!(out.status.success(), "georeport: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json from the script")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotline_files_through_open311_and_a_311_client_reads_it_back() {
    let node = TestNode::start_services(&hotline_token(), &["routing"]);
    let base = node.intake.http.clone();

    // filed as FixMyStreet files it: XML back, the case id as the request id
    let (status, xml) = post(&base, &fms_form("小区电梯停运三个月\n请求督促物业维修。")).await;
    assert_eq!(status, 201, "{xml}");
    assert!(xml.starts_with("<?xml") && xml.contains("<service_requests><request>"), "{xml}");
    let id = xml_text(&xml, "service_request_id");
    assert!(id.starts_with("320211-"), "{xml}");
    assert!(xml_text(&xml, "service_notice").contains(&id), "the receipt names the case");
    let (_, again) = post(&base, &fms_form("小区电梯停运三个月\n请求督促物业维修。")).await;
    assert_eq!(xml_text(&again, "service_request_id"), id, "a retried form is the same request");

    // in the ledger as a 12345 petition, and routed
    let registered = node.wait_for(&id, "registered", Duration::from_secs(5)).await.expect("registered");
    assert_eq!(registered.data["channel"], "hotline_12345");
    assert_eq!(registered.data["petitioners"][0]["name"], "张三");
    assert_eq!(registered.recorded_by.as_ref().map(|a| a.id.as_str()), Some("hotline"));
    node.wait_for(&id, "routed", Duration::from_secs(15)).await.expect("routed");

    // a third-party client reads the services, the definition and the request (JSON and XML)
    let read = georeport(
        &base,
        &format!(
            "print(json.dumps({{'services': js.get_service_list(), 'xml_services': xml.get_service_list(), \
             'definition': xml.get_service_definition('urban_construction'), \
             'one': js.get_service_request('{id}'), 'xml_one': xml.get_service_request('{id}'), \
             'many': js.get_service_requests(service_request_id='{id},320211-20000101-000009'), \
             'open': js.get_service_requests(status='open', service_code='urban_construction')}}))"
        ),
    );
    assert_eq!(read["services"][0]["service_code"], "urban_construction", "{read}");
    assert_eq!(read["xml_services"]["service_name"], "城乡建设", "{read}");
    let attributes = &read["definition"]["attributes"]["attribute"];
    assert!(attributes.as_array().is_some_and(|a| a.iter().any(|x| x["code"] == "kind")), "{read}");
    for one in [&read["one"], &read["xml_one"]] {
        assert_eq!(one["service_request_id"], id.as_str(), "{read}");
        assert_eq!(one["status"], "open");
        assert_eq!(one["agency_responsible"], "测试区住房和城乡建设局");
    }
    assert_eq!(read["many"].as_array().map(Vec::len), Some(1), "unknown ids are left out: {read}");
    assert!(read["open"].as_array().is_some_and(|l| l.iter().any(|r| r["service_request_id"] == id.as_str())));
    let text = read.to_string();
    assert!(
        !text.contains("13812345678") && !text.contains("张三") && !text.contains("蠡湖"),
        "no personal data: {text}"
    );

    // the organ replies: the request is closed for a 311 client
    node.act(&id, &serde_json::json!({"action": "accept"})).await;
    let (s, v) =
        node.act(&id, &serde_json::json!({"action": "reply", "outcome": "supported", "summary": "已修复"})).await;
    assert_eq!(s, 200, "{v}");
    let r = reqwest::get(format!("{base}/open311/v2/requests/{id}.json")).await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["status"], "closed", "{v}");
    let r = reqwest::get(format!("{base}/open311/v2/tokens/{id}.json")).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()[0]["service_request_id"], id.as_str());

    // a second request is withdrawn (a final case): both are listed as closed, in the window
    let (_, xml) = post(&base, &fms_form("路灯不亮")).await;
    let withdrawn = xml_text(&xml, "service_request_id");
    let (s, v) = node.act(&withdrawn, &serde_json::json!({"action": "withdraw", "reason": "已自行解决"})).await;
    assert_eq!(s, 200, "{v}");
    let list = |query: &'static str| {
        let base = base.clone();
        async move {
            let r = reqwest::get(format!("{base}/open311/v2/requests.json?{query}")).await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r["service_request_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let mut closed = Vec::new();
    for _ in 0..50 {
        closed = list("status=closed").await;
        if closed.contains(&withdrawn) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed, vec![withdrawn.clone(), id.clone()], "newest first, the final case included");
    assert!(list("status=open").await.is_empty());
    assert!(list("end_date=2020-01-01T00:00:00%2B08:00").await.is_empty(), "outside the window");
    assert_eq!(list("start_date=2020-01-01T00:00:00Z").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open311_error_is_in_the_specs_format() {
    let node = TestNode::start_with(&hotline_token());
    let base = node.intake.http.clone();
    let with = |key: &'static str, value: &str| {
        let mut f = fms_form("电梯故障");
        f.retain(|(k, _)| *k != key);
        if !value.is_empty() {
            f.push((key, value.to_string()));
        }
        f
    };
    let cases: Vec<(&str, Fields, u16, &str)> = vec![
        ("no key", with("api_key", ""), 403, "api_key"),
        ("bad key", with("api_key", "not-a-key"), 403, "api_key"),
        ("unknown service", with("service_code", "weather"), 404, "service_code"),
        ("missing location", with("address_id", ""), 400, "address_id"),
        ("unknown jurisdiction", with("jurisdiction_id", "110000"), 404, "jurisdiction_id"),
        ("too long a description", with("description", &"长".repeat(10_001)), 400, "description"),
        ("a bad phone", with("phone", "12345"), 400, "phone"),
    ];
    for (what, form, code, field) in cases {
        let (status, xml) = post(&base, &form).await;
        assert_eq!(status, code, "{what}: {xml}");
        assert!(xml.contains("<errors><error><code>"), "{what}: {xml}");
        assert_eq!(xml_text(&xml, "code"), code.to_string(), "{what}");
        assert!(xml_text(&xml, "description").starts_with(field), "{what}: {xml}");
    }
    // reads: an unknown request, service or jurisdiction is 404 in JSON too
    for path in
        ["requests/320211-20000101-000001.json", "services/weather.json", "services.json?jurisdiction_id=110000"]
    {
        let r = reqwest::get(format!("{base}/open311/v2/{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v[0]["code"], 404, "{path}: {v}");
    }
    let r = reqwest::get(format!("{base}/open311/v2/requests.json?status=lost")).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_located_by_lat_and_long_lands_in_the_division_whose_area_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let area = dir.path().join("320211001.geojson");
    // 蠡园街道, roughly: a square around 31.55 N, 120.25 E
    std::fs::write(
        &area,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"蠡园街道"},
        "geometry":{"type":"Polygon","coordinates":[[[120.2,31.5],[120.3,31.5],[120.3,31.6],[120.2,31.6],[120.2,31.5]]]}}]}"#,
    )
    .unwrap();
    let extra = format!(
        "{}\n[[divisions]]\ncode = \"320211001\"\nname = \"蠡园街道\"\narea = \"{}\"\n",
        hotline_token(),
        area.display()
    );
    let node = TestNode::start_with(&extra);
    let base = node.intake.http.clone();
    let located = |lat: &str, long: &str| {
        let mut f = fms_form("路灯损坏");
        f.retain(|(k, _)| *k != "address_id");
        f.push(("lat", lat.into()));
        f.push(("long", long.into()));
        f
    };
    let (status, xml) = post(&base, &located("31.55", "120.25")).await;
    assert_eq!(status, 201, "{xml}");
    let id = xml_text(&xml, "service_request_id");
    let registered = node.wait_for(&id, "registered", Duration::from_secs(5)).await.expect("registered");
    assert_eq!(registered.data["location"]["division"], "320211001");
    let (status, xml) = post(&base, &located("39.9", "116.4")).await;
    assert_eq!(status, 400, "{xml}");
    assert!(xml_text(&xml, "description").starts_with("lat"), "{xml}");
}
