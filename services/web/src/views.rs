//! Templates (minijinja, auto-escaped, built into the binary) and the Chinese labels the pages
//! show for the wire's names. One stylesheet, no JavaScript.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value as Jinja};
use serde_json::Value;
use xinfang_shared::access::Role;
use xinfang_shared::config::Settings;
use xinfang_shared::error::ApiError;

use crate::auth::Staff;
use crate::Web;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("register.html", include_str!("../templates/register.html")),
    ("receipt.html", include_str!("../templates/receipt.html")),
    ("inbox.html", include_str!("../templates/inbox.html")),
    ("case.html", include_str!("../templates/case.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("query.html", include_str!("../templates/query.html")),
    ("status.html", include_str!("../templates/status.html")),
    ("escalations.html", include_str!("../templates/escalations.html")),
    ("escalation.html", include_str!("../templates/escalation.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("receptions.html", include_str!("../templates/receptions.html")),
    ("book.html", include_str!("../templates/book.html")),
    ("booked.html", include_str!("../templates/booked.html")),
    ("agenda.html", include_str!("../templates/agenda.html")),
    ("slot.html", include_str!("../templates/slot.html")),
    ("campaigns.html", include_str!("../templates/campaigns.html")),
    ("campaign.html", include_str!("../templates/campaign.html")),
    ("city.html", include_str!("../templates/city.html")),
];

const STYLE: &str = include_str!("../static/style.css");

/// The page shown for a refused cross-site post.
pub const CROSS_SITE: &str = "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>已拒绝</title>\
</head><body><h1>已拒绝</h1><p id=\"error\">来自其他网站的提交已被拒绝（cross-site post refused）。</p>\
<p><a href=\"/\">返回首页</a></p></body></html>";

/// The templates with the node's names for organs, categories and divisions.
pub struct Views {
    env: Environment<'static>,
}

impl Views {
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text).map_err(|e| format!("template {name}: {e}"))?;
        }
        let names = |pairs: Vec<(String, String)>| Arc::new(pairs.into_iter().collect::<HashMap<_, _>>());
        let organs = names(settings.organs.iter().map(|o| (o.id.clone(), o.name.clone())).collect());
        let categories = names(settings.categories.iter().map(|c| (c.code.clone(), c.name.clone())).collect());
        let lookup = |table: Arc<HashMap<String, String>>| {
            move |v: &str| -> String { table.get(v).cloned().unwrap_or_else(|| v.to_string()) }
        };
        env.add_filter("organ", lookup(organs));
        env.add_filter("category", lookup(categories));
        env.add_filter("label", |v: &str| label(v).unwrap_or(v).to_string());
        env.add_filter("when", when);
        env.add_filter("left", left);
        env.add_filter("percent", percent);
        env.add_filter("summary", |e: Jinja| summary(&serde_json::to_value(&e).unwrap_or_default()));
        env.add_global("node_code", settings.node.code.clone());
        env.add_global("node_name", settings.node.name.clone());
        Ok(Self { env })
    }
}

/// A page: `template` with the signed-in user and their menu around `ctx`.
pub fn page(web: &Web, status: StatusCode, template: &str, staff: Option<&Staff>, ctx: Jinja) -> Response {
    let user = staff.map(|s| {
        let roles: Vec<&str> = s.identity.roles.iter().map(|r| r.label_zh()).collect();
        let has = |r: Role| s.has(r);
        minijinja::context! {
            name => s.identity.display.clone(),
            roles => roles.join("、"),
            organ_id => s.identity.organ_id.as_ref().map(|o| o.to_string()),
            register => has(Role::Bureau),
            inbox => has(Role::Organ) || has(Role::Bureau) || has(Role::Auditor),
            overview => has(Role::Bureau) || has(Role::Auditor),
            escalations => has(Role::Office) || has(Role::Auditor),
            bureau => has(Role::Bureau),
            campaigns => has(Role::Bureau) || has(Role::Auditor) || has(Role::Office),
        }
    });
    let ctx = minijinja::context! { user, ..ctx };
    let rendered = web.views.env.get_template(template).and_then(|t| t.render(ctx));
    match rendered {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<h1>页面生成失败</h1>")).into_response()
        }
    }
}

/// A refusal as a page: what was wrong (the wire error's message and field), with its status.
pub fn refused(web: &Web, staff: Option<&Staff>, e: &ApiError) -> Response {
    let status = status_of(e);
    let ctx = minijinja::context! { code => e.code.as_str(), field => e.field.clone(), message => e.message.clone() };
    page(web, status, "error.html", staff, ctx)
}

/// The kinds of petition (性质) the forms offer.
const KINDS: &[&str] = &["appeal_request", "complaint_report", "suggestion"];

/// What a petition form chooses from: kinds, the node's divisions and categories.
pub fn petition_choices(web: &Web) -> Jinja {
    let s = &web.settings;
    minijinja::context! {
        kinds => KINDS,
        divisions => s.divisions.iter().map(|d| serde_json::json!({"code": d.code, "name": d.name})).collect::<Vec<_>>(),
        categories => s.categories.iter().map(|c| serde_json::json!({"code": c.code, "name": c.name})).collect::<Vec<_>>(),
    }
}

/// A form field's value, trimmed ("" when absent).
pub fn field<'a>(form: &'a std::collections::BTreeMap<String, String>, key: &str) -> &'a str {
    form.get(key).map(|s| s.trim()).unwrap_or_default()
}

/// A refusal as one line for a page's error banner: the message, and the field it names.
pub fn message_of(e: &ApiError) -> String {
    match &e.field {
        Some(f) => format!("{}（{f}）", e.message),
        None => e.message.clone(),
    }
}

/// The HTTP status of a refusal.
pub fn status_of(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE).into_response()
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html("<!DOCTYPE html><html lang=\"zh-CN\"><meta charset=\"utf-8\"><title>未找到</title><h1>未找到该页面</h1><p><a href=\"/\">返回首页</a></p></html>")).into_response()
}

/// `2026-12-02T09:30:00+08:00` → `2026-12-02 09:30`.
fn when(v: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| xinfang_shared::time::to_cst(t).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// A rate → `90%`, `33.3%`.
fn percent(rate: f64) -> String {
    let p = format!("{:.1}", rate * 100.0);
    format!("{}%", p.strip_suffix(".0").unwrap_or(&p))
}

/// Seconds left → `剩 3 天 2 小时`, or `逾期 1 天 4 小时`.
fn left(seconds: i64) -> String {
    let (prefix, s) = if seconds < 0 { ("逾期 ", -seconds) } else { ("剩 ", seconds) };
    let (days, hours, minutes) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (days, hours) {
        (0, 0) => format!("{prefix}{minutes} 分钟"),
        (0, h) => format!("{prefix}{h} 小时"),
        (d, h) => format!("{prefix}{d} 天 {h} 小时"),
    }
}

/// The Chinese label of a wire name: event types, steps, actions, channels, kinds, outcomes,
/// satisfaction, refusal reasons, urgency, escalation levels and states.
pub fn label(name: &str) -> Option<&'static str> {
    Some(match name {
        // events
        "registered" => "登记",
        "routed" => "转送/交办",
        "forwarded" => "属地转出",
        "transferred_in" => "转入",
        "accepted" => "受理",
        "rejected" => "不予受理",
        "jurisdiction_declined" => "管辖异议",
        "extended" => "延期",
        "replied" => "出具处理意见",
        "evaluated" => "评价",
        "review_requested" => "申请复查",
        "review_replied" => "复查意见",
        "rereview_requested" => "申请复核",
        "rereview_replied" => "复核意见",
        "hearing_started" => "听证开始",
        "hearing_ended" => "听证结束",
        "deadline_warned" => "期限预警",
        "deadline_breached" => "逾期",
        "closed" => "办结",
        "terminated" => "终结",
        "escalated" => "督办/上报",
        "directive_received" => "收到督办单",
        "escalation_acknowledged" => "上级已签收",
        "due_recomputed" => "期限重算",
        "notified" => "已通知",
        "notification_failed" => "通知失败",
        "leader_in_charge" => "领导包案",
        "leader_released" => "解除包案",
        "appointment_booked" => "预约领导接访",
        "reception_recorded" => "领导接访记录",
        "campaign_marked" => "列入攻坚化解",
        // steps
        "route" => "登记转送",
        "objection" => "管辖异议期",
        "acceptance" => "受理",
        "handling" => "办理",
        "review_window" => "复查申请期",
        "review" => "复查",
        "rereview_window" => "复核申请期",
        "rereview" => "复核",
        "supervision" => "督办",
        "directive" => "督办单",
        "reception" => "接访记录",
        // actions
        "accept" => "受理",
        "reject" => "不予受理",
        "decline_jurisdiction" => "提出管辖异议",
        "extend" => "延长办理期限",
        "reply" => "出具处理意见",
        "review_reply" => "出具复查意见",
        "rereview_reply" => "出具复核意见",
        "hearing_start" => "开始听证",
        "hearing_end" => "结束听证",
        "evaluate" => "评价",
        "request_review" => "申请复查",
        "request_rereview" => "申请复核",
        "withdraw" => "撤回",
        "take_charge" => "领导包案",
        "release_charge" => "解除包案",
        // channels
        "letter" => "来信",
        "visit" => "来访",
        "online" => "网上信访",
        "phone" => "来电",
        "hotline_12345" => "12345 热线",
        "leader_mailbox" => "领导信箱",
        "leader_reception" => "领导接访",
        // kinds
        "suggestion" => "建议意见",
        "complaint_report" => "检举控告",
        "appeal_request" => "申诉求决",
        // outcomes and satisfaction
        "supported" => "支持",
        "partly_supported" => "部分支持",
        "not_supported" => "不支持",
        "explained" => "解释说明",
        "satisfied" => "满意",
        "basically_satisfied" => "基本满意",
        "unsatisfied" => "不满意",
        // refusal reasons
        "litigation_channel" => "属诉讼等法定途径",
        "same_matter_in_progress" => "同一事项正在办理",
        "terminated_matter" => "已终结事项",
        "not_a_petition" => "不属于信访事项",
        "other" => "其他",
        // urgency
        "overdue" => "已逾期",
        "warning" => "临期",
        "normal" => "期限内",
        "idle" => "待信访人",
        // escalations
        "reminder" => "提醒",
        "parent" => "上报",
        "open" => "待签收",
        "acknowledged" => "已签收",
        "directed" => "已督办",
        _ => return None,
    })
}

/// A one-line summary of an event for a timeline: never names, ID numbers or phones.
fn summary(e: &Value) -> String {
    let d = &e["data"];
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let l = |k: &str| label(d[k].as_str().unwrap_or_default()).unwrap_or_default().to_string();
    match e["type"].as_str().unwrap_or_default() {
        "registered" => format!("{}（{}）", s("title"), l("channel")),
        "routed" => format!("{} — {}", s("organ_name"), s("reason")),
        "forwarded" => format!("转至 {} — {}", s("to_node"), s("reason")),
        "transferred_in" => format!("自 {} 转入", s("from_node")),
        "deadline_warned" | "deadline_breached" => {
            format!("{}，期限 {}", l("step"), when(d["due_at"].as_str().unwrap_or_default()))
        }
        "escalated" => format!("{} → {}：{}", l("level"), s("to"), s("reason")),
        "rejected" => format!("{} {}", l("reason_code"), s("note")),
        "replied" | "review_replied" | "rereview_replied" => format!("{}：{}", l("outcome"), s("summary")),
        "evaluated" => l("satisfaction"),
        "extended" => format!("延期 {} 天：{}（{} 批准）", d["days"], s("reason"), s("approved_by")),
        "directive_received" => format!("{}（限 {}）", s("text"), when(d["due_at"].as_str().unwrap_or_default())),
        "jurisdiction_declined" => s("note"),
        "leader_in_charge" => {
            let previous = d["previous"]["name"].as_str().map(|p| format!("（接替 {p}）")).unwrap_or_default();
            format!(
                "{} {}{previous}",
                d["leader"]["name"].as_str().unwrap_or_default(),
                d["leader"]["title"].as_str().unwrap_or_default()
            )
        }
        "leader_released" => format!("{} {}", d["leader"]["name"].as_str().unwrap_or_default(), s("reason")),
        "appointment_booked" => format!(
            "{} {}，{}（{}）",
            d["leader"]["name"].as_str().unwrap_or_default(),
            when(d["starts_at"].as_str().unwrap_or_default()),
            s("place"),
            s("appointment_id")
        ),
        "reception_recorded" if d["attended"] == true => {
            format!("{} 接待：{}", d["leader"]["name"].as_str().unwrap_or_default(), s("outcome"))
        }
        "reception_recorded" => "信访人未到".to_string(),
        "campaign_marked" => s("name"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_in_chinese() {
        assert_eq!(left(3 * 86_400 + 2 * 3600 + 5), "剩 3 天 2 小时");
        assert_eq!(left(-(86_400 + 4 * 3600)), "逾期 1 天 4 小时");
        assert_eq!(left(600), "剩 10 分钟");
        assert_eq!((percent(1.0), percent(0.333), percent(0.9)), ("100%".into(), "33.3%".into(), "90%".into()));
    }

    #[test]
    fn a_registered_summary_has_no_personal_data() {
        let e = serde_json::json!({"type": "registered", "data": {"title": "电梯故障", "channel": "visit",
            "petitioners": [{"name": "张三", "phone": "13812345678"}]}});
        let s = summary(&e);
        assert_eq!(s, "电梯故障（来访）");
    }
}
