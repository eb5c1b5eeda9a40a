#!/usr/bin/env python3
"""Checks the dashboards of deploy/grafana/dashboards without a Grafana server (none is
installable here), the way Grafana's dashboard-linter would, plus a schema check:

- each dashboard reads back through grafana-foundation-sdk's Dashboard model (the types Grafana
  generates from its dashboard schema) into exactly the JSON on disk: no unknown key, no
  missing one; and every value read is of the type the model declares for it (nested models,
  enums, literals, lists) — the schema check, with no JSON schema file installable here;
- datasources by the `datasource` template variable, never a fixed one;
- `$__rate_interval` as the range of every rate(), irate() and increase();
- a unit on every panel; panel ids unique; panels inside the 24-column grid;
- every query parses as PromQL (promql-parser, GreptimeTeam's parser) once the template
  variables are replaced, and names only xf_ metrics, `up`, or recorded series;
- the provisioning files name the datasource uid the dashboards default to.

    python3 deploy/grafana/check.py    (scripts/setup.sh --test-tools installs the parsers)
"""

import enum
import json
import pathlib
import re
import sys
import typing

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tools" / "python"))

import promql_parser  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

VARIABLES = {"$node": "320211", "$organ": "320211-zjj", "$__rate_interval": "1m", "${datasource}": "x"}
METRIC = re.compile(r"\b(xf_[a-z_]+|[a-z_]+:xf_[a-z_]+:[a-z0-9_]+|up)\b")


def type_errors(value, hint, where):
    """Where `value` is not of the declared type `hint` (a model class, a typing form)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (typing.Any, object) or isinstance(hint, typing.TypeVar):
        return []
    if origin is typing.Union:
        if value is None and type(None) in args:
            return []
        tries = [type_errors(value, a, where) for a in args if a is not type(None)]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin in (list, dict):
        if not isinstance(value, origin):
            return [f"{where}: {type(value).__name__} where a {origin.__name__} belongs"]
        items = enumerate(value) if origin is list else value.items()
        inner = args[-1] if args else typing.Any
        return [e for k, v in items for e in type_errors(v, inner, f"{where}[{k!r}]")]
    if not isinstance(hint, type):
        return []
    if issubclass(hint, enum.Enum):
        return [] if isinstance(value, hint) or value in {m.value for m in hint} else [f"{where}: {value!r} not in {hint.__name__}"]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a number"]
    if hint is int and isinstance(value, bool):
        return [f"{where}: {value!r} is not an integer"]
    if hint.__module__.startswith("grafana_foundation_sdk.models"):
        if not isinstance(value, hint):
            return [f"{where}: {type(value).__name__} where a {hint.__name__} belongs"]
        hints = typing.get_type_hints(hint)
        return [e for name, h in hints.items() for e in type_errors(getattr(value, name, None), h, f"{where}.{name}")]
    if hint.__module__.startswith("grafana_foundation_sdk"):
        return []  # a variant (e.g. a panel's data query): its own plugin's model
    return [] if isinstance(value, hint) else [f"{where}: {value!r} is not a {hint.__name__}"]


def panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def expand(expr):
    for k, v in VARIABLES.items():
        expr = expr.replace(k, v)
    return expr


def check(path):
    problems = []
    d = json.loads(path.read_text(encoding="utf-8"))
    model = Dashboard.from_json(d)
    problems += type_errors(model, Dashboard, "dashboard")
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    if again != d:
        keys = sorted(set(d) ^ set(again)) or [k for k in d if d.get(k) != again.get(k)]
        problems.append(f"does not read back through the dashboard schema unchanged (keys: {keys})")
    names = [v["name"] for v in d.get("templating", {}).get("list", [])]
    if "datasource" not in names:
        problems.append("no `datasource` template variable")
    ds_var = next((v for v in d["templating"]["list"] if v["name"] == "datasource"), {})
    if ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        problems.append("the `datasource` variable must be of type datasource, query prometheus")
    seen = set()
    for p in panels(d):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            problems.append(f"{where}: gridPos needs integer x, y, w and h")
        elif g["x"] + g["w"] > 24:
            problems.append(f"{where}: outside the 24-column grid")
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not the template variable")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no unit")
        if not p.get("targets"):
            problems.append(f"{where}: no query")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{where}: a query's datasource is not the template variable")
            for m in re.finditer(r"\b(rate|irate|increase)\(", expr):
                inner = expr[m.end():]
                depth, end = 1, 0
                for i, c in enumerate(inner):
                    depth += {"(": 1, ")": -1}.get(c, 0)
                    if depth == 0:
                        end = i
                        break
                if not inner[:end].rstrip().endswith("[$__rate_interval]"):
                    problems.append(f"{where}: {m.group(1)}() without [$__rate_interval]: {expr}")
            try:
                promql_parser.parse(expand(expr))
            except Exception as e:  # the parser raises ValueError with its message
                problems.append(f"{where}: PromQL does not parse: {e}: {expr}")
            if not METRIC.search(expr):
                problems.append(f"{where}: names no xinfang metric: {expr}")
    return problems


def main():
    failed = False
    files = sorted((HERE / "dashboards").glob("*.json"))
    if not files:
        print("no dashboards", file=sys.stderr)
        sys.exit(1)
    uids = set()
    for path in files:
        problems = check(path)
        uid = json.loads(path.read_text(encoding="utf-8")).get("uid")
        if uid in uids:
            problems.append(f"uid {uid} used twice")
        uids.add(uid)
        for p in problems:
            print(f"{path.relative_to(ROOT)}: {p}", file=sys.stderr)
        failed |= bool(problems)
    ds = (HERE / "provisioning/datasources/xinfang.yml").read_text(encoding="utf-8")
    if "uid: xinfang-prometheus" not in ds or "type: prometheus" not in ds:
        print("provisioning/datasources/xinfang.yml: no prometheus datasource with uid xinfang-prometheus", file=sys.stderr)
        failed = True
    if failed:
        sys.exit(1)
    print(f"{len(files)} dashboards: schema, lint and PromQL checks passed")


if __name__ == "__main__":
    main()
