#!/usr/bin/env python3
"""The one source of xinfang's recording rules and Grafana dashboards (DESIGN.md §13).

    python3 deploy/generate.py           # writes the files below
    python3 deploy/generate.py --check   # fails when a committed file differs from its source

Writes deploy/prometheus/rules/indicators.yml (the offices' indicators per node and per organ
over 1d and 30d, DOMAIN.md "Indicators") and deploy/grafana/dashboards/*.json, built with
grafana-foundation-sdk (Grafana's own schema, as Python types). The alert rules are written by
hand in deploy/prometheus/rules/alerts.yml. `scripts/setup.sh --test-tools` installs the SDK
into tools/python.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "python"))

from grafana_foundation_sdk.builders import common  # noqa: E402
from grafana_foundation_sdk.builders import dashboard as db  # noqa: E402
from grafana_foundation_sdk.builders import prometheus as prom  # noqa: E402
from grafana_foundation_sdk.builders import stat, timeseries  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models import common as cm  # noqa: E402
from grafana_foundation_sdk.models import dashboard as dm  # noqa: E402

# --- the indicators -------------------------------------------------------------------------
# (name, 中文, counter, numerator's outcome matcher, denominator counter, by organ)
INDICATORS = [
    ("acceptance_on_time", "及时受理率", "acceptance_decisions", 'outcome="on_time"', "acceptance_decisions", True),
    ("replies_on_time", "按期办结率", "replies", 'outcome="on_time"', "replies", True),
    ("evaluated", "参评率", "evaluations", "", "replies", True),
    ("satisfied", "满意率", "evaluations", 'outcome=~"satisfied|basically_satisfied"', "evaluations", True),
    ("repeat_petitions", "重复信访率", "petitions", 'outcome="repeat"', "petitions", False),
]
COUNTS = ["petitions", "acceptance_decisions", "replies", "evaluations"]
WINDOWS = ["1d", "30d"]


def counts_record(count, window):
    """The recorded increase of a count by node (and organ) and outcome."""
    by = "node_outcome" if count == "petitions" else "node_organ_outcome"
    return f"{by}:xf_deadlines_{count}:increase{window}"


def ratio_record(level, name, window):
    return f"{level}:xf_{name}:ratio{window}"


def ratio_expr(by, num_count, num_match, den_count, window):
    """Numerator and denominator summed before dividing; no series while nothing was counted."""
    num = f"increase(xf_deadlines_{num_count}_total{{{num_match}}}[{window}])"
    den = f"increase(xf_deadlines_{den_count}_total[{window}])"
    return f"sum by ({by}) ({num})\n/\n(sum by ({by}) ({den}) > 0)"


def recording_rules():
    groups = []
    for window in WINDOWS:
        rules = []
        for count in COUNTS:
            by = "node, outcome" if count == "petitions" else "node, organ, outcome"
            rules.append(
                (counts_record(count, window), f"sum by ({by}) (increase(xf_deadlines_{count}_total[{window}]))", None)
            )
        for name, zh, num, match, den, by_organ in INDICATORS:
            rules.append((ratio_record("node", name, window), ratio_expr("node", num, match, den, window), zh))
            if by_organ:
                rules.append(
                    (ratio_record("node_organ", name, window), ratio_expr("node, organ", num, match, den, window), zh)
                )
        # a 30-day window moves slowly: once a minute is enough
        groups.append((f"xinfang-indicators-{window}", "1m" if window == "30d" else None, rules))
    groups.append(
        (
            "xinfang-cases",
            None,
            [
                ("node_organ:xf_deadlines_overdue_steps:sum", "sum by (node, organ) (xf_deadlines_overdue_steps)", None),
                (
                    "node_step_organ:xf_deadlines_breaches:increase1d",
                    "sum by (node, step, organ) (increase(xf_deadlines_breaches_total[1d]))",
                    None,
                ),
                (
                    "node_level:xf_escalation_escalations:increase1d",
                    "sum by (node, level) (increase(xf_escalation_escalations_total[1d]))",
                    None,
                ),
                (
                    "node_consumer:xf_consumer_pending:max",
                    by_consumer("max", "xf_(.+)_consumer_pending"),
                    None,
                ),
                (
                    "node_consumer:xf_dead_letters:sum",
                    by_consumer("sum", "xf_(.+)_dead_letters_total"),
                    None,
                ),
                (
                    "node:xf_deadlines_open_cases:sum",
                    'sum by (node) (xf_deadlines_armed_timers{step=~"' + "|".join(OPEN_STEPS) + '"})',
                    None,
                ),
            ],
        )
    )
    return groups


def by_consumer(op, pattern):
    """Every service's consumer metric of one kind (`xf_<consumer>_…`) as one series per node
    and consumer: alerts and panels cannot keep a metric name through a function."""
    selector = '{__name__=~"' + pattern.replace("(.+)", ".+") + '"}'
    return f'{op} by (node, consumer) (label_replace({selector}, "consumer", "$1", "__name__", "{pattern}"))'


# the steps of which an open case has exactly one running (objection, supervision and directive
# run beside another)
OPEN_STEPS = ["route", "acceptance", "handling", "review_window", "review", "rereview_window", "rereview"]


def rules_yaml(groups):
    out = [
        "# Generated by deploy/generate.py: edit it there, then run it. Tested by promtool test rules:",
        "# deploy/prometheus/tests/indicators_test.yml and cases_test.yml.",
        "# The offices' indicators (DOMAIN.md): numerator and denominator are summed before dividing,",
        "# and a ratio has no series while its denominator is zero.",
        "groups:",
    ]
    for name, interval, rules in groups:
        out.append(f"  - name: {name}")
        if interval:
            out.append(f"    interval: {interval}")
        out.append("    rules:")
        for record, expr, zh in rules:
            if zh:
                out.append(f"      # {zh}")
            out.append(f"      - record: {record}")
            out.append("        expr: |")
            out.extend(f"          {line}" for line in expr.split("\n"))
    return "\n".join(out) + "\n"


# --- the dashboards ---------------------------------------------------------------------------
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")


class Board:
    """A dashboard being laid out: panels in rows of 24 columns, ids in order."""

    def __init__(self, uid, title, description, tags, organ=False):
        self.b = (
            db.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["xinfang"] + tags)
            .timezone("Asia/Shanghai")
            .time("now-24h", "now")
            .refresh("1m")
            .editable()
        )
        self.b.with_variable(
            db.DatasourceVariable("datasource").label("数据源 Data source").type("prometheus")
        )
        self.b.with_variable(
            db.QueryVariable("node")
            .label("节点 Node")
            .datasource(DS)
            .query("label_values(xf_build_info, node)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
        if organ:
            self.b.with_variable(
                db.QueryVariable("organ")
                .label("办理单位 Organ")
                .datasource(DS)
                .query('label_values(xf_deadlines_acceptance_decisions_total{node=~"$node"}, organ)')
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True)
                .include_all(True)
                .all_value(".*")
                .sort(dm.VariableSort.ALPHABETICAL_ASC)
            )
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x = 0
        self.b.with_row(db.Row(title).id(self.next_id).grid_pos(dm.GridPos(h=1, w=24, x=0, y=self.y)))
        self.next_id += 1
        self.y += 1
        self.row_h = 0

    def panel(self, kind, title, description, unit, targets, w=12, h=8, maximum=None):
        if self.x + w > 24:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0
        if kind == "stat":
            builder = (
                stat.Panel()
                .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                .graph_mode(cm.BigValueGraphMode.NONE)
            )
        else:
            builder = (
                timeseries.Panel()
                .legend(
                    common.VizLegendOptions()
                    .display_mode(cm.LegendDisplayMode.LIST)
                    .placement(cm.LegendPlacement.BOTTOM)
                    .show_legend(True)
                )
                .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
            )
        builder = (
            builder.id(self.next_id)
            .title(title)
            .description(description)
            .datasource(DS)
            .unit(unit)
            .grid_pos(dm.GridPos(h=h, w=w, x=self.x, y=self.y))
        )
        if maximum is not None:
            builder = builder.min(0).max(maximum)
        for i, (expr, legend) in enumerate(targets):
            q = prom.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i)).datasource(DS)
            q = q.instant() if kind == "stat" else q.range()
            builder = builder.with_target(q)
        self.b.with_panel(builder)
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        return json.loads(json.dumps(self.b.build(), cls=JSONEncoder))


def city_ratio(name, window):
    """The city's (or the chosen nodes') indicator: the nodes' counts summed, then divided."""
    _, _, num, match, den, _ = next(i for i in INDICATORS if i[0] == name)
    sel = lambda m: "{" + ",".join(x for x in ['node=~"$node"', m] if x) + "}"  # noqa: E731
    n = f"sum({counts_record(num, window)}{sel(match)})"
    d = f"sum({counts_record(den, window)}{sel('')})"
    return f"{n} / ({d} > 0)"


def city_dashboard():
    b = Board(
        "xinfang-city",
        "信访 · 全市概览 City overview",
        "The offices' indicators by district, open and late cases, escalations (DOMAIN.md Indicators).",
        ["city"],
    )
    b.row("指标 Indicators (30 天 days)")
    for i, (name, zh, *_) in enumerate(INDICATORS):
        b.panel("stat", zh, f"{zh} over the last 30 days, the chosen nodes together", "percentunit",
                [(city_ratio(name, "30d"), zh)], w=5 if i < 4 else 4, h=4, maximum=1)
    b.row("各区县 By district (1 天 day)")
    for name, zh, *_ in INDICATORS[:4]:
        b.panel("timeseries", f"{zh} by node", f"{zh} over a sliding day, per node", "percentunit",
                [(f'{ratio_record("node", name, "1d")}{{node=~"$node"}}', "{{node}}")], maximum=1)
    b.row("案件 Cases")
    b.panel("timeseries", "在办案件 Open cases", "Cases with a running period (one per case), per node", "short",
            [('node:xf_deadlines_open_cases:sum{node=~"$node"}', "{{node}}")])
    b.panel("timeseries", "超期 Late steps", "Open steps past their due, per node", "short",
            [('sum by (node) (node_organ:xf_deadlines_overdue_steps:sum{node=~"$node"})', "{{node}}")])
    b.panel("timeseries", "上报 Escalations", "Escalations recorded per second, by node and level", "ops",
            [('sum by (node, level) (rate(xf_escalation_escalations_total{node=~"$node"}[$__rate_interval]))',
              "{{node}} {{level}}")])
    b.panel("timeseries", "市级收到 Received by the city", "Escalations reaching a parent's inbox, by child and level",
            "ops", [('sum by (child, level) (rate(xf_escalation_received_total{node=~"$node"}[$__rate_interval]))',
                     "{{child}} {{level}}")])
    # every intake replica exports the same figures: one series each before summing
    b.row("攻坚化解与领导接访 Campaigns and receptions")
    one = lambda metric, by: f'max by (node, {by}) ({metric}{{node=~"$node"}})'  # noqa: E731
    b.panel("timeseries", "化解率 Settled rate", "Settled (化解) cases of the campaigns over their cases, per node",
            "percentunit",
            [(f'sum by (node) ({one("xf_campaign_settled", "campaign, district")})'
              f' / (sum by (node) ({one("xf_campaign_cases", "campaign, district")}) > 0)', "{{node}}")], maximum=1)
    b.panel("timeseries", "满意率 Satisfaction", "Satisfied or basically satisfied among the campaigns' rated cases, "
            "per node", "percentunit",
            [(f'sum by (node) ({one("xf_campaign_satisfied", "campaign")})'
              f' / (sum by (node) ({one("xf_campaign_rated", "campaign")}) > 0)', "{{node}}")], maximum=1)
    b.panel("timeseries", "接访 Receptions", "Leaders' reception bookings by node, year and outcome "
            "(attended, absent, pending)", "short",
            [(one("xf_reception_appointments", "year, outcome"), "{{node}} {{year}} {{outcome}}")])
    b.panel("timeseries", "接访领导 Leaders receiving", "Leaders holding reception slots, by node and year", "short",
            [(one("xf_reception_leaders", "year"), "{{node}} {{year}}")])
    return b.json()


def quantile(q, histogram, selector, by="le"):
    """The q-quantile of a histogram's rate, its buckets summed by `by` first."""
    return f"histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket{selector}[$__rate_interval])))"


def node_dashboard():
    b = Board("xinfang-node", "信访 · 节点 Node", "One node's intake, routing, timers and notices.", ["node"])
    sel = '{node=~"$node"}'
    b.row("登记 Intake")
    b.panel("timeseries", "登记 Petitions registered", "Petitions registered per second, by channel", "reqps",
            [(f'sum by (channel) (rate(xf_intake_petitions_total{{node=~"$node",outcome="registered"}}[$__rate_interval]))',
              "{{channel}}")])
    b.panel("timeseries", "登记延迟 Intake latency", "Request handling time, p50 and p99", "s",
            [(quantile(0.5, "xf_intake_request_duration_seconds", sel), "p50"),
             (quantile(0.99, "xf_intake_request_duration_seconds", sel), "p99")])
    b.panel("timeseries", "拒绝 Refusals", "Error replies per second, by code", "reqps",
            [(f"sum by (code) (rate(xf_intake_refusals_total{sel}[$__rate_interval]))", "{{code}}")])
    b.panel("timeseries", "办理操作 Case actions", "Case actions per second, by action and outcome", "ops",
            [(f"sum by (action, outcome) (rate(xf_intake_actions_total{sel}[$__rate_interval]))", "{{action}} {{outcome}}")])
    b.row("转送 Routing")
    b.panel("timeseries", "转送结果 Routing results", "Cases routed per second, by result", "ops",
            [(f"sum by (result) (rate(xf_routing_routed_total{sel}[$__rate_interval]))", "{{result}}")])
    b.panel("timeseries", "转送延迟 Routing latency", "Registration to routing decision, p99", "s",
            [(quantile(0.99, "xf_routing_route_latency_seconds", sel), "p99")])
    b.row("期限 Timers")
    b.panel("timeseries", "计时 Armed timers", "Open steps with a timer, by step", "short",
            [(f"sum by (step) (xf_deadlines_armed_timers{sel})", "{{step}}")])
    b.panel("timeseries", "到期 Timers fired", "Warnings, breaches and closings per second, by step", "ops",
            [(f"sum by (step, kind) (rate(xf_deadlines_fired_total{sel}[$__rate_interval]))", "{{step}} {{kind}}")])
    b.row("通知 Notices")
    b.panel("timeseries", "通知 Notices by result", "Notices per second, by channel and result", "ops",
            [(f"sum by (channel, result) (rate(xf_notification_notices_total{sel}[$__rate_interval]))", "{{channel}} {{result}}")])
    b.panel("timeseries", "待发 Outbox", "Notices waiting for delivery", "short",
            [(f"sum by (node) (xf_notification_outbox_depth{sel})", "waiting {{node}}")])
    return b.json()


def organ_dashboard():
    b = Board("xinfang-organ", "信访 · 办理单位 Organ record",
              "One organ's late cases, breaches and on-time rates.", ["organ"], organ=True)
    sel = '{node=~"$node",organ=~"$organ"}'
    b.row("按期 On time (30 天 days)")
    for name, zh, *_ in INDICATORS[:4]:
        b.panel("timeseries", zh, f"{zh} over a sliding 30 days, per organ", "percentunit",
                [(f"{ratio_record('node_organ', name, '30d')}{sel}", "{{organ}}")], w=6, maximum=1)
    b.row("超期 Late")
    b.panel("timeseries", "超期步骤 Steps past due", "Open steps past their due, by organ and step", "short",
            [(f"sum by (organ, step) (xf_deadlines_overdue_steps{sel})", "{{organ}} {{step}}")])
    b.panel("timeseries", "超期次数 Breaches (1 天 day)", "Breaches over a sliding day, by organ and step", "short",
            [(f"sum by (organ, step) (node_step_organ:xf_deadlines_breaches:increase1d{sel})", "{{organ}} {{step}}")])
    b.panel("timeseries", "受理 Acceptance decisions", "Acceptances and refusals per second, on time or late", "ops",
            [(f"sum by (organ, outcome) (rate(xf_deadlines_acceptance_decisions_total{sel}[$__rate_interval]))",
              "{{organ}} {{outcome}}")])
    b.panel("timeseries", "答复 Replies", "Replies per second, on time or late", "ops",
            [(f"sum by (organ, outcome) (rate(xf_deadlines_replies_total{sel}[$__rate_interval]))", "{{organ}} {{outcome}}")])
    return b.json()


def platform_dashboard():
    b = Board("xinfang-platform", "信访 · 平台 Platform",
              "Consumers, dead letters, links, sourcing and timer lag: what keeps the ledger flowing.", ["platform"])
    sel = '{node=~"$node"}'
    b.row("服务 Services")
    b.panel("timeseries", "在线 Services up", "1 while Prometheus reaches a service", "short",
            [('up{job="xinfang",node=~"$node"}', "{{node}} {{service}}")])
    b.panel("timeseries", "消费积压 Consumer lag", "Messages each consumer has not received yet", "short",
            [('node_consumer:xf_consumer_pending:max{node=~"$node"}', "{{node}} {{consumer}}")])
    b.panel("timeseries", "死信 Dead letters", "Events terminated as dead letters, per second", "ops",
            [('rate(node_consumer:xf_dead_letters:sum{node=~"$node"}[$__rate_interval])', "{{node}} {{consumer}}")])
    b.panel("timeseries", "计时滞后 Timer firing lag", "Fired time minus due time, p99", "s",
            [(quantile(0.99, "xf_deadlines_firing_lag_seconds", '{node=~"$node",kind="breached"}', by="node, le"),
              "{{node}}")])
    b.row("链路 Links and sourcing")
    b.panel("timeseries", "链路 Leaf links", "1 while the link to a node is up", "short",
            [(f"xf_intake_link_up{sel}", "{{node}} → {{link}}")])
    b.panel("timeseries", "待上传 Outbox pending", "Outbox messages the parent has not sourced yet; inbox messages not yet here",
            "short", [(f"xf_intake_outbox_pending{sel}", "outbox {{node}}"), (f"xf_intake_inbox_lag{sel}", "inbox {{node}}")])
    b.panel("timeseries", "同步滞后 Source lag", "Messages each stream's source has not copied yet", "short",
            [(f"sum by (node, stream, source) (xf_intake_source_lag{sel})", "{{stream}} ← {{source}}")])
    b.panel("timeseries", "流 Stream messages", "Messages in each of the node's streams", "short",
            [(f"xf_intake_stream_messages{sel}", "{{stream}}")])
    return b.json()


DASHBOARDS = {
    "city.json": city_dashboard,
    "node.json": node_dashboard,
    "organ.json": organ_dashboard,
    "platform.json": platform_dashboard,
}


def outputs():
    files = {ROOT / "deploy/prometheus/rules/indicators.yml": rules_yaml(recording_rules())}
    for name, make in DASHBOARDS.items():
        files[ROOT / "deploy/grafana/dashboards" / name] = json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
    return files


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date with deploy/generate.py (run it): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
