//! The coordination office's pages (联席会议办公室督办件): server-rendered HTML with Chinese
//! labels and plain forms, usable without JavaScript. Every value from a case or a request is
//! escaped.

use serde_json::Value;
use xinfang_shared::event::{EscalationLevel, Step};
use xinfang_shared::time::Instant;

use crate::inbox::{Filter, View};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn level_label(l: EscalationLevel) -> &'static str {
    match l {
        EscalationLevel::Reminder => "提醒",
        EscalationLevel::Supervision => "督办",
        EscalationLevel::Parent => "上报",
    }
}

fn step_label(s: Option<Step>) -> &'static str {
    match s {
        None => "—",
        Some(Step::Route) => "登记转送",
        Some(Step::Objection) => "管辖异议",
        Some(Step::Acceptance) => "受理",
        Some(Step::Handling) => "办理",
        Some(Step::ReviewWindow) => "复查申请期",
        Some(Step::Review) => "复查",
        Some(Step::RereviewWindow) => "复核申请期",
        Some(Step::Rereview) => "复核",
        Some(Step::Supervision) => "督办",
        Some(Step::Directive) => "督办单",
    }
}

fn event_label(kind: &str) -> &str {
    match kind {
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
        "notified" => "已通知",
        "notification_failed" => "通知失败",
        other => other,
    }
}

fn when(t: Instant) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn age(now: Instant, t: Instant) -> String {
    let m = (now - t).num_minutes().max(0);
    match m {
        m if m < 60 => format!("{m} 分钟"),
        m if m < 48 * 60 => format!("{} 小时", m / 60),
        m => format!("{} 天", m / 1440),
    }
}

/// A one-line summary of an event for the timeline (no ID numbers or phones).
fn summary(e: &Value) -> String {
    let d = &e["data"];
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    match e["type"].as_str().unwrap_or_default() {
        "registered" => format!("{}（{}）", s("title"), s("category")),
        "routed" => format!("{} — {}", s("organ_name"), s("reason")),
        "forwarded" => format!("转至 {} — {}", s("to_node"), s("reason")),
        "transferred_in" => format!("自 {} 转入", s("from_node")),
        "deadline_warned" | "deadline_breached" => {
            format!("{}，期限 {}", s("step"), s("due_at"))
        }
        "escalated" => format!("{} → {}：{}", s("level"), s("to"), s("reason")),
        "rejected" => format!("{} {}", s("reason_code"), s("note")),
        "replied" | "review_replied" | "rereview_replied" => s("summary"),
        "extended" => format!("延期 {} 天：{}", d["days"], s("reason")),
        "directive_received" => format!("{}（限 {}）", s("text"), s("due_at")),
        _ => String::new(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;width:100%}\
td,th{border:1px solid #bbb;padding:.3em .5em;text-align:left}th{background:#eee}.open{color:#b00}\
form.inline{display:inline}label{margin-right:1em}textarea{width:100%}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{}</title>\
<style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

fn option(value: &str, label: &str, current: Option<&str>) -> String {
    let sel = if current.unwrap_or("") == value { " selected" } else { "" };
    format!("<option value=\"{}\"{sel}>{}</option>", esc(value), esc(label))
}

/// The inbox: escalations the filter keeps, oldest first.
pub fn list(node: &str, views: &[View], filter: &Filter, now: Instant) -> String {
    let state = filter.state.as_deref();
    let level = filter.level.as_deref();
    let mut body = format!("<h1>督办件收件箱 · 节点 {}</h1>", esc(node));
    body.push_str("<form method=\"get\" action=\"/escalations\">");
    body.push_str("<label>状态 <select name=\"state\">");
    for (v, l) in
        [("pending", "未办结"), ("open", "待签收"), ("acknowledged", "已签收"), ("directed", "已督办"), ("all", "全部")]
    {
        body.push_str(&option(v, l, state));
    }
    body.push_str("</select></label><label>级别 <select name=\"level\">");
    for (v, l) in [("", "全部"), ("parent", "上报"), ("supervision", "督办"), ("reminder", "提醒")] {
        body.push_str(&option(v, l, level));
    }
    body.push_str(&format!(
        "</select></label><label>来自节点 <input name=\"child\" size=\"6\" value=\"{}\"></label>\
<button type=\"submit\">筛选</button></form>",
        esc(filter.child.as_deref().unwrap_or(""))
    ));
    if views.is_empty() {
        body.push_str("<p id=\"empty\">没有符合条件的督办件。</p>");
    } else {
        body.push_str(
            "<table id=\"escalations\"><thead><tr><th>收到时间</th><th>已等待</th><th>来自节点</th><th>案件编号</th>\
<th>级别</th><th>环节</th><th>原因</th><th>状态</th><th>操作</th></tr></thead><tbody>",
        );
        for v in views {
            let r = &v.received;
            let ack = if v.ack.is_none() && v.directives.is_empty() {
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/escalations/{}/ack\">\
<button type=\"submit\" name=\"ack\">签收</button></form>",
                    esc(&r.id)
                )
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr data-id=\"{id}\"><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/escalations/{id}\">{}</a></td>\
<td>{}</td><td>{}</td><td>{}</td><td class=\"state {}\">{}</td><td>{ack} <a href=\"/escalations/{id}\">详情/督办</a></td></tr>",
                when(r.received_at),
                age(now, r.received_at),
                esc(r.from_node.as_str()),
                esc(r.case_id.as_str()),
                level_label(r.level),
                step_label(r.step),
                esc(&r.reason),
                if v.state == crate::inbox::State::Open { "open" } else { "" },
                v.state.label(),
                id = esc(&r.id),
            ));
        }
        body.push_str("</tbody></table>");
    }
    page("督办件收件箱", &body)
}

/// One escalation: the case timeline as the child sent it, and the acknowledge and directive
/// forms.
pub fn detail(view: &View, now: Instant, notice: Option<&str>) -> String {
    let r = &view.received;
    let mut body =
        format!("<p><a href=\"/escalations\">← 返回收件箱</a></p><h1>督办件 {}</h1>", esc(r.case_id.as_str()));
    if let Some(n) = notice {
        body.push_str(&format!("<p id=\"notice\" role=\"alert\">{}</p>", esc(n)));
    }
    body.push_str(&format!(
        "<table id=\"facts\"><tr><th>来自节点</th><td>{}</td></tr><tr><th>级别</th><td>{}</td></tr>\
<tr><th>环节</th><td>{}</td></tr><tr><th>原因</th><td>{}</td></tr><tr><th>收到时间</th><td>{}（已等待 {}）</td></tr>\
<tr><th>状态</th><td id=\"state\">{}</td></tr></table>",
        esc(r.from_node.as_str()),
        level_label(r.level),
        step_label(r.step),
        esc(&r.reason),
        when(r.received_at),
        age(now, r.received_at),
        view.state.label()
    ));
    if let Some(a) = &view.ack {
        body.push_str(&format!("<p>已由 {} 于 {} 签收。</p>", esc(&a.by), when(a.at)));
    } else {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/escalations/{}/ack\"><label>经办人 <input name=\"by\" value=\"\"></label>\
<button type=\"submit\" name=\"ack\">签收</button></form>",
            esc(&r.id)
        ));
    }
    body.push_str("<h2>督办单</h2>");
    for d in &view.directives {
        body.push_str(&format!(
            "<p class=\"directive\">{}：{}（限 {} 前办结，{}）</p>",
            when(d.at),
            esc(d.text.as_deref().unwrap_or_default()),
            d.due_at.map(when).unwrap_or_default(),
            esc(&d.by)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/escalations/{}/directive\"><p><label>督办意见<br>\
<textarea name=\"text\" rows=\"4\" required maxlength=\"{}\"></textarea></label></p>\
<p><label>办结期限 <input type=\"date\" name=\"due_date\" required></label>\
<label>经办人 <input name=\"by\" value=\"\"></label><button type=\"submit\" name=\"direct\">下发督办单</button></p></form>",
        esc(&r.id),
        crate::request::MAX_TEXT
    ));
    body.push_str("<h2>案件经过</h2><table id=\"timeline\"><thead><tr><th>时间</th><th>事项</th><th>内容</th></tr></thead><tbody>");
    for e in &r.snapshot {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(e["at"].as_str().unwrap_or_default()),
            esc(event_label(e["type"].as_str().unwrap_or_default())),
            esc(&summary(e))
        ));
    }
    body.push_str("</tbody></table>");
    page(&format!("督办件 {}", r.case_id), &body)
}

/// A refused form: what was wrong, and the way back.
pub fn refusal(message: &str, back: &str) -> String {
    page(
        "无法办理",
        &format!(
            "<h1>无法办理</h1><p id=\"error\" role=\"alert\">{}</p><p><a href=\"{}\">返回</a></p>",
            esc(message),
            esc(back)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<script>\"a\"&'b'</script>"), "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;");
    }
}
