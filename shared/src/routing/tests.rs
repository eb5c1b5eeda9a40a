use super::*;
use crate::config::tests::NODE;
use crate::ids::DivisionCode;
use crate::petition::{Channel, Location, Petitioner};
use crate::time::cst;
use chrono::TimeZone;
use proptest::prelude::*;

const ORGANS: &str = r#"
[[categories]]
code = "labor_social_security"
name = "劳动和社会保障"

[[categories]]
code = "political_legal"
name = "涉法涉诉"

[[categories]]
code = "discipline"
name = "纪检监察"

[[organs]]
id = "320211-rsj"
name = "滨湖区人社局"
role = "department"
node = "320211"
parent = "320200-rsj"

[[organs]]
id = "320211-zfw"
name = "滨湖区政法委"
role = "political_legal"
node = "320211"

[[organs]]
id = "320211-jw"
name = "滨湖区纪委监委"
role = "discipline"
node = "320211"

[[organs]]
id = "320211-zjj-wy"
name = "滨湖区住建局物业科"
role = "department"
node = "320211"
parent = "320211-zjj"

[[organs]]
id = "320200-gh"
name = "无锡市规划局"
role = "department"
node = "320200"

[[rules]]
id = "labor"
division_prefix = "320211"
categories = ["labor_social_security"]
organ = "320211-rsj"

[[rules]]
id = "street-housing-complaints"
division_prefix = "320211001"
categories = ["urban_construction"]
kinds = ["complaint_report"]
organ = "320211-zjj-wy"

[[rules]]
id = "street-any"
division_prefix = "320211001"
organ = "320211-rsj"

[[rules]]
id = "city-planning"
division_prefix = "320211002"
categories = ["urban_construction"]
organ = "320200-gh"
"#;

fn settings() -> Settings {
    Settings::from_toml(&format!("{NODE}\n{ORGANS}")).unwrap()
}

fn petition(division: &str, category: &str, kind: Kind, respondent: Option<&str>) -> Petition {
    Petition {
        channel: Channel::Online,
        received_at: cst().with_ymd_and_hms(2026, 11, 27, 9, 0, 0).unwrap(),
        petitioners: vec![Petitioner { name: "张三".into(), id_number: None, phone: None, address: None }],
        headcount: 1,
        location: Location { division: DivisionCode::parse(division).unwrap(), address: None },
        category: category.into(),
        kind,
        respondent_organ_id: respondent.map(|r| OrganId::parse(r).unwrap()),
        title: "t".into(),
        content: "c".into(),
    }
}

fn organ_of(d: &Decision) -> &str {
    match d {
        Decision::Assign { organ_id, .. } => organ_id.as_str(),
        Decision::Forward { .. } => "forward",
    }
}

fn rule_of(d: &Decision) -> &str {
    match d {
        Decision::Assign { rule_id, .. } => rule_id,
        Decision::Forward { .. } => "forward",
    }
}

#[test]
fn most_specific_rule_wins() {
    let s = settings();
    let r = Router::new(&s);
    let none = History::default();
    let d = r.route(&petition("320211", "urban_construction", Kind::AppealRequest, None), &none);
    assert_eq!((organ_of(&d), rule_of(&d)), ("320211-zjj", "housing"));
    // longer prefix beats the county-wide housing rule
    let d = r.route(&petition("320211001", "urban_construction", Kind::AppealRequest, None), &none);
    assert_eq!(rule_of(&d), "street-any");
    // same prefix: naming category and kind beats naming neither
    let d = r.route(&petition("320211001", "urban_construction", Kind::ComplaintReport, None), &none);
    assert_eq!(rule_of(&d), "street-housing-complaints");
    let d = r.route(&petition("320211", "discipline", Kind::Suggestion, None), &none);
    assert_eq!((organ_of(&d), rule_of(&d)), ("320211-xfj", "fallback"));
    if let Decision::Assign { reason, result, .. } = d {
        assert!(!reason.is_empty());
        assert_eq!(result, "fallback");
    }
}

#[test]
fn special_routes_of_the_regulation() {
    let s = settings();
    let r = Router::new(&s);
    let none = History::default();
    let d = r.route(&petition("320211", "political_legal", Kind::AppealRequest, None), &none);
    assert_eq!(organ_of(&d), "320211-zfw");
    let d = r.route(&petition("320211", "discipline", Kind::ComplaintReport, None), &none);
    assert_eq!(organ_of(&d), "320211-jw");
}

#[test]
fn a_report_never_reaches_the_accused() {
    let s = settings();
    let r = Router::new(&s);
    let d = r.route(
        &petition("320211", "urban_construction", Kind::ComplaintReport, Some("320211-zjj")),
        &History::default(),
    );
    assert_eq!((organ_of(&d), rule_of(&d)), ("320211-jw", "confidential"));
    let d = r.route(&petition("320211", "discipline", Kind::ComplaintReport, Some("320211-jw")), &History::default());
    assert_ne!(organ_of(&d), "320211-jw");
}

#[test]
fn other_districts_and_levels_are_forwarded() {
    let s = settings();
    let r = Router::new(&s);
    let d = r.route(&petition("320213", "urban_construction", Kind::AppealRequest, None), &History::default());
    assert!(matches!(d, Decision::Forward { ref to_node, .. } if to_node.as_str() == "320213"));
    let disputed = History { came_from: vec![NodeCode::parse("320213").unwrap()], ..Default::default() };
    let d = r.route(&petition("320213", "urban_construction", Kind::AppealRequest, None), &disputed);
    assert!(matches!(d, Decision::Forward { ref to_node, .. } if to_node.as_str() == "320200"), "{d:?}");
    let d = r.route(&petition("320211002", "urban_construction", Kind::AppealRequest, None), &History::default());
    assert!(matches!(d, Decision::Forward { ref to_node, .. } if to_node.as_str() == "320200"), "{d:?}");
}

#[test]
fn declines_reroute_then_fall_back_to_the_bureau() {
    let s = settings();
    let r = Router::new(&s);
    let p = petition("320211", "urban_construction", Kind::AppealRequest, None);
    let once = History {
        declined: vec![OrganId::parse("320211-zjj").unwrap()],
        suggested: Some(OrganId::parse("320211-rsj").unwrap()),
        ..Default::default()
    };
    assert_eq!(organ_of(&r.route(&p, &once)), "320211-rsj");
    let once_no_hint = History { suggested: None, ..once.clone() };
    assert_eq!(organ_of(&r.route(&p, &once_no_hint)), "320211-xfj");
    let twice = History {
        declined: vec![OrganId::parse("320211-zjj").unwrap(), OrganId::parse("320211-rsj").unwrap()],
        ..Default::default()
    };
    assert_eq!(rule_of(&r.route(&p, &twice)), "declined_twice");
}

#[test]
fn review_goes_one_level_up() {
    let s = settings();
    let r = Router::new(&s);
    let id = |o: &str| OrganId::parse(o).unwrap();
    // the superior lives on the parent node: the case travels there, naming it
    let d = r.review(Some(&id("320211-zjj")), None);
    assert!(
        matches!(&d, Decision::Forward { to_node, organ_id: Some(o), .. }
        if to_node.as_str() == "320200" && o.as_str() == "320200-zjj"),
        "{d:?}"
    );
    // the superior is local
    let d = r.review(Some(&id("320211-zjj-wy")), None);
    assert_eq!((organ_of(&d), rule_of(&d)), ("320211-zjj", "review"));
    // arrived from below naming a local organ
    let d = r.review(Some(&id("320213-zjj")), Some(&id("320211-rsj")));
    assert_eq!(organ_of(&d), "320211-rsj");
    // nothing known: the bureau coordinates
    assert_eq!(rule_of(&r.review(None, None)), "review_fallback");
    assert_eq!(rule_of(&r.review(Some(&id("320211-zjj")), Some(&id("320200-gh")))), "review_fallback");
}

fn arb_petition() -> impl Strategy<Value = Petition> {
    let divisions = prop::sample::select(vec!["320211", "320211001", "320211002", "320211999", "320213"]);
    let categories =
        prop::sample::select(vec!["urban_construction", "labor_social_security", "political_legal", "discipline"]);
    let kinds = prop::sample::select(vec![Kind::Suggestion, Kind::ComplaintReport, Kind::AppealRequest]);
    let organs = prop::option::of(prop::sample::select(vec![
        "320211-xfj",
        "320211-zjj",
        "320211-rsj",
        "320211-zfw",
        "320211-jw",
        "320211-zjj-wy",
        "320200-gh",
    ]));
    (divisions, categories, kinds, organs).prop_map(|(d, c, k, o)| petition(d, c, k, o))
}

fn arb_history() -> impl Strategy<Value = History> {
    let organ = prop::sample::select(vec!["320211-zjj", "320211-rsj", "320211-jw", "320211-zfw"]);
    (prop::collection::vec(organ.clone(), 0..3), prop::option::of(organ)).prop_map(|(d, s)| History {
        declined: d.into_iter().map(|o| OrganId::parse(o).unwrap()).collect(),
        suggested: s.map(|o| OrganId::parse(o).unwrap()),
        came_from: vec![],
        named: None,
        repeat_organ: None,
    })
}

proptest! {
    #[test]
    fn routing_invariants(p in arb_petition(), h in arb_history()) {
        let s = settings();
        let d = Router::new(&s).route(&p, &h);
        match &d {
            Decision::Assign { organ_id, reason, rule_id, .. } => {
                prop_assert!(!reason.is_empty() && !rule_id.is_empty());
                prop_assert!(s.organs.iter().any(|o| o.id == organ_id.as_str() && o.node == "320211"), "a known local organ");
                if p.kind == Kind::ComplaintReport {
                    prop_assert_ne!(Some(organ_id), p.respondent_organ_id.as_ref(), "never to the accused");
                }
                let confidential = rule_id == "confidential";
                if h.declined.len() < MAX_DECLINES && !confidential {
                    prop_assert!(!h.declined.contains(organ_id), "never back to an organ that declined");
                } else if !confidential {
                    prop_assert_eq!(organ_id.as_str(), "320211-xfj");
                }
            }
            Decision::Forward { to_node, reason, .. } => {
                prop_assert!(!reason.is_empty());
                prop_assert!(to_node.as_str() == "320213" || to_node.as_str() == "320200");
            }
        }
    }
}
