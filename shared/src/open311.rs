//! Open311 GeoReport v2 (DESIGN.md §12), pure: the node's categories as 311 services, the
//! attributes a petition needs beyond the spec, a `POST requests` form as a §5 petition, a
//! case as a service request (no personal data), and the spec's errors.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::Settings;
use crate::error::ApiError;
use crate::petition::MAX_CONTENT_CHARS;
use crate::state::Stage;
use crate::time::rfc3339;
use crate::worklist::Item;

/// One service (GET services): a category of the node file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub service_code: String,
    pub service_name: String,
    pub description: String,
    /// Always true: every petition needs the attributes of [`definition`].
    pub metadata: bool,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub keywords: String,
    pub group: String,
}

/// The node's services, one per category.
pub fn services(settings: &Settings) -> Vec<Service> {
    settings
        .categories
        .iter()
        .map(|c| Service {
            service_code: c.code.clone(),
            service_name: c.name.clone(),
            description: format!("{}类信访事项（依《信访工作条例》登记、转送、办理）", c.name),
            metadata: true,
            kind: "realtime",
            keywords: "信访,petition".into(),
            group: settings.node.name.clone(),
        })
        .collect()
}

/// One choice of a list attribute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub key: String,
    pub name: String,
}

/// An attribute of a service definition (what a petition needs beyond the spec's fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribute {
    pub variable: bool,
    pub code: &'static str,
    pub datatype: &'static str,
    pub required: bool,
    pub datatype_description: &'static str,
    pub order: u32,
    pub description: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Choice>,
}

/// The definition of a service (GET services/{code}): its attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Definition {
    pub service_code: String,
    pub attributes: Vec<Attribute>,
}

/// The attributes every service has: the kind of petition (Arts. 29–31), how many people came,
/// the organ complained about, and the petitioner's resident ID number.
pub fn definition(settings: &Settings, code: &str) -> Option<Definition> {
    settings.categories.iter().find(|c| c.code == code)?;
    let choice = |key: &str, name: &str| Choice { key: key.into(), name: name.into() };
    let organs =
        settings.organs.iter().filter(|o| o.node == settings.node.code).map(|o| choice(&o.id, &o.name)).collect();
    Some(Definition {
        service_code: code.to_string(),
        attributes: vec![
            Attribute {
                variable: true,
                code: "kind",
                datatype: "singlevaluelist",
                required: true,
                datatype_description: "",
                order: 1,
                description: "信访事项性质",
                values: vec![
                    choice("appeal_request", "申诉求决"),
                    choice("complaint_report", "检举控告"),
                    choice("suggestion", "建议意见"),
                ],
            },
            Attribute {
                variable: true,
                code: "headcount",
                datatype: "number",
                required: false,
                datatype_description: "来访人数，默认 1；5 人及以上为集体访",
                order: 2,
                description: "人数",
                values: vec![],
            },
            Attribute {
                variable: true,
                code: "respondent_organ_id",
                datatype: "singlevaluelist",
                required: false,
                datatype_description: "",
                order: 3,
                description: "被反映单位",
                values: organs,
            },
            Attribute {
                variable: true,
                code: "id_number",
                datatype: "string",
                required: false,
                datatype_description: "18 位居民身份证号码",
                order: 4,
                description: "信访人身份证号码",
                values: vec![],
            },
        ],
    })
}

/// An error in the spec's shape: `{"code", "description"}` with the HTTP status as code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Open311Error {
    pub code: u16,
    pub description: String,
}

impl Open311Error {
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Self { code, description: description.into() }
    }
}

/// The Open311 field a §5 field path came from, for a refusal that names what the client sent.
pub fn form_field(path: &str) -> String {
    let field = match path {
        "petitioners[0].name" | "petitioners" | "petitioners[0]" => "last_name",
        "petitioners[0].phone" => "phone",
        "petitioners[0].id_number" => "attribute[id_number]",
        "location.division" | "location" => "address_id",
        "location.address" => "address_string",
        "category" => "service_code",
        "title" | "content" => "description",
        "kind" => "attribute[kind]",
        "headcount" => "attribute[headcount]",
        "respondent_organ_id" => "attribute[respondent_organ_id]",
        other => other,
    };
    field.to_string()
}

/// A wire error as the spec's error, its field named as the client sent it.
pub fn from_api(e: &ApiError) -> Open311Error {
    let status = match e.code.http_status() {
        401 | 403 => 403,
        s => s,
    };
    let what = match &e.field {
        Some(f) => format!("{}: {}", form_field(f), e.message),
        None => e.message.clone(),
    };
    Open311Error::new(status, what)
}

/// The spec's fields a `POST requests` form may carry besides `attribute[…]`.
const FORM_FIELDS: &[&str] = &[
    "api_key",
    "jurisdiction_id",
    "service_code",
    "lat",
    "long",
    "address_string",
    "address_id",
    "email",
    "device_id",
    "account_id",
    "first_name",
    "last_name",
    "phone",
    "description",
    "media_url",
];

/// How much of the description becomes the petition's title.
const TITLE_CHARS: usize = 40;

/// The §5 petition of a `POST requests` form (without `channel`, which the key decides).
/// Location by `address_id` (a division code); `lat`/`long` alone are refused naming `lat`
/// here — the caller resolves them against the node's division areas first.
pub fn petition_of_form(form: &[(String, String)]) -> Result<Value, Open311Error> {
    let mut fields: Map<String, Value> = Map::new();
    let mut attributes: Map<String, Value> = Map::new();
    for (k, v) in form {
        let v = v.trim();
        if let Some(code) = k.strip_prefix("attribute[").and_then(|r| r.strip_suffix(']')) {
            if !v.is_empty() {
                attributes.insert(code.to_string(), json!(v));
            }
        } else if FORM_FIELDS.contains(&k.as_str()) {
            if !v.is_empty() {
                fields.insert(k.clone(), json!(v));
            }
        } else {
            return Err(Open311Error::new(400, format!("{k}: not a field of this service request")));
        }
    }
    let text = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let description = text("description");
    if description.is_empty() {
        return Err(Open311Error::new(400, "description: the petition's content is required"));
    }
    if description.chars().count() > MAX_CONTENT_CHARS {
        return Err(Open311Error::new(400, format!("description: at most {MAX_CONTENT_CHARS} characters")));
    }
    let division = text("address_id");
    if division.is_empty() {
        let field = if fields.contains_key("lat") || fields.contains_key("long") { "lat" } else { "address_id" };
        return Err(Open311Error::new(
            400,
            format!("{field}: the location is required as address_id (a division code)"),
        ));
    }
    // Chinese order: family name (last_name) first
    let name = format!("{}{}", text("last_name"), text("first_name"));
    let mut petitioner = Map::new();
    if !name.is_empty() {
        petitioner.insert("name".into(), json!(name));
    }
    if let Some(phone) = fields.get("phone") {
        petitioner.insert("phone".into(), phone.clone());
    }
    if let Some(id) = attributes.get("id_number") {
        petitioner.insert("id_number".into(), id.clone());
    }
    let title: String = description.lines().next().unwrap_or_default().chars().take(TITLE_CHARS).collect();
    let mut location = Map::new();
    location.insert("division".into(), json!(division));
    if let Some(a) = fields.get("address_string") {
        location.insert("address".into(), a.clone());
    }
    let headcount = match attributes.get("headcount").and_then(Value::as_str) {
        None => json!(1),
        Some(h) => h
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| Open311Error::new(400, "attribute[headcount]: a whole number of people"))?,
    };
    let mut petition = json!({
        "petitioners": [petitioner],
        "headcount": headcount,
        "location": location,
        "category": text("service_code"),
        "kind": attributes.get("kind").cloned().unwrap_or(Value::Null),
        "title": title,
        "content": description,
    });
    if let Some(o) = attributes.get("respondent_organ_id") {
        petition["respondent_organ_id"] = o.clone();
    }
    Ok(petition)
}

/// `open` or `closed`, as a 311 client reads it: closed once the organ's opinion is delivered,
/// or the case was refused, withdrawn, ended or sent to another node.
pub fn status(stage: Stage) -> &'static str {
    match stage {
        Stage::AwaitingRoute
        | Stage::WithOrgan
        | Stage::Accepted
        | Stage::ReviewRequested
        | Stage::RereviewRequested
        | Stage::InHearing => "open",
        Stage::Replied
        | Stage::ReviewReplied
        | Stage::Terminated
        | Stage::Closed
        | Stage::Rejected
        | Stage::Forwarded => "closed",
    }
}

/// A case as a service request (GET requests), from its worklist line: no names, ID numbers,
/// phones, addresses or content. The handling organ and the category by their names in the
/// node file; the current step's due as `expected_datetime`.
pub fn request_of(item: &Item, settings: &Settings) -> Value {
    let organ = item.organ_id.as_ref().and_then(|o| settings.organs.iter().find(|x| x.id == o.as_str()));
    let category = settings.categories.iter().find(|c| c.code == item.category);
    json!({
        "service_request_id": item.case_id,
        "status": status(item.stage),
        "status_notes": item.stage_label,
        "service_name": category.map(|c| c.name.as_str()).unwrap_or_default(),
        "service_code": item.category,
        "agency_responsible": organ.map(|o| o.name.as_str()).unwrap_or_default(),
        "service_notice": "依《信访工作条例》办理；信访人凭查询码可查询办理进度。",
        "requested_datetime": rfc3339(item.registered_at),
        "updated_datetime": rfc3339(item.updated_at),
        "expected_datetime": item.due_at.map(rfc3339),
        "address_id": item.division,
    })
}

/// A division's area (`[[divisions]] area`, GeoJSON in WGS 84 longitude/latitude), for
/// requests located by `lat`/`long`.
#[derive(Debug, Clone)]
pub struct Area {
    pub division: String,
    pub shape: geo::MultiPolygon<f64>,
}

/// The area of `division` from GeoJSON text: a Polygon or MultiPolygon, bare or as the
/// geometries of a Feature or FeatureCollection.
pub fn area_of_geojson(division: &str, text: &str) -> Result<Area, String> {
    let parsed: geojson::GeoJson = text.parse().map_err(|e| format!("not GeoJSON: {e}"))?;
    let geometries: Vec<geojson::Geometry> = match parsed {
        geojson::GeoJson::Geometry(g) => vec![g],
        geojson::GeoJson::Feature(f) => f.geometry.into_iter().collect(),
        geojson::GeoJson::FeatureCollection(c) => c.features.into_iter().filter_map(|f| f.geometry).collect(),
    };
    let mut polygons = Vec::new();
    for g in geometries {
        match geo::Geometry::<f64>::try_from(g).map_err(|e| format!("bad geometry: {e}"))? {
            geo::Geometry::Polygon(p) => polygons.push(p),
            geo::Geometry::MultiPolygon(m) => polygons.extend(m.0),
            _ => return Err("only Polygon and MultiPolygon geometries make an area".into()),
        }
    }
    if polygons.is_empty() {
        return Err("no polygon in it".into());
    }
    Ok(Area { division: division.to_string(), shape: geo::MultiPolygon(polygons) })
}

/// The division a point (`long`, `lat`) falls in: the most specific (longest code) area that
/// contains it.
pub fn division_at(areas: &[Area], long: f64, lat: f64) -> Option<&str> {
    use geo::Contains;
    let point = geo::Point::new(long, lat);
    areas.iter().filter(|a| a.shape.contains(&point)).max_by_key(|a| a.division.len()).map(|a| a.division.as_str())
}

/// A form located by `lat`/`long` only, with `address_id` set to the division there; a form
/// with `address_id`, or with no areas to look in, is left as it is.
pub fn locate(form: &mut Vec<(String, String)>, areas: &[Area]) -> Result<(), Open311Error> {
    let get = |form: &[(String, String)], k: &str| {
        form.iter().find(|(key, _)| key == k).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty())
    };
    if get(form, "address_id").is_some() || areas.is_empty() {
        return Ok(());
    }
    let (Some(lat), Some(long)) = (get(form, "lat"), get(form, "long")) else { return Ok(()) };
    let coordinate = |v: &str, k: &str, range: f64| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && x.abs() <= range)
            .ok_or_else(|| Open311Error::new(400, format!("{k}: a decimal degree (WGS 84)")))
    };
    let (lat, long) = (coordinate(&lat, "lat", 90.0)?, coordinate(&long, "long", 180.0)?);
    let division = division_at(areas, long, lat)
        .ok_or_else(|| Open311Error::new(400, format!("lat: {lat},{long} is outside this node's areas")))?;
    form.retain(|(k, _)| k != "address_id");
    form.push(("address_id".into(), division.to_string()));
    Ok(())
}

/// The notice a created request carries (the receipt the regulation requires, Art. 24): case
/// id, query code and what happens next.
pub fn receipt_notice(case_id: &str, query_code: &str) -> String {
    format!(
        "您的信访事项已登记，案件编号 {case_id}，查询码 {query_code}。有权处理的机关将自收到之日起 15 日内告知是否受理；凭案件编号和查询码可查询办理进度。"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_fixmystreet_form_becomes_a_petition() {
        let p = petition_of_form(&form(&[
            ("api_key", "k"),
            ("service_code", "urban_construction"),
            ("address_id", "320211"),
            ("address_string", "蠡湖街道"),
            ("first_name", "三"),
            ("last_name", "张"),
            ("phone", "13812345678"),
            ("description", "小区电梯停运三个月\n请求督促物业维修。"),
            ("attribute[kind]", "appeal_request"),
            ("attribute[headcount]", "2"),
            ("media_url", ""),
        ]))
        .unwrap();
        assert_eq!(p["petitioners"], json!([{"name": "张三", "phone": "13812345678"}]));
        assert_eq!(p["title"], "小区电梯停运三个月");
        assert_eq!(p["headcount"], 2);
        assert_eq!(p["location"], json!({"division": "320211", "address": "蠡湖街道"}));
        assert_eq!(p["kind"], "appeal_request");
    }

    #[test]
    fn refusals_name_the_field_the_client_sent() {
        let base = [("service_code", "x"), ("description", "d")];
        let e = petition_of_form(&form(&base)).unwrap_err();
        assert_eq!((e.code, e.description.starts_with("address_id")), (400, true));
        let e = petition_of_form(&form(&[base[0], base[1], ("lat", "31.5"), ("long", "120.3")])).unwrap_err();
        assert!(e.description.starts_with("lat"), "{e:?}");
        let e = petition_of_form(&form(&[base[0], base[1], ("colour", "red")])).unwrap_err();
        assert!(e.description.starts_with("colour"), "{e:?}");
        let long = "长".repeat(MAX_CONTENT_CHARS + 1);
        let e = petition_of_form(&form(&[base[0], ("description", &long), ("address_id", "320211")])).unwrap_err();
        assert!(e.description.starts_with("description"), "{e:?}");
        let api = ApiError::field(ErrorCode::InvalidField, "petitioners[0].phone", "not a mobile number");
        assert_eq!(from_api(&api).description, "phone: not a mobile number");
        assert_eq!(from_api(&ApiError::general(ErrorCode::Unauthorized, "x")).code, 403);
    }

    #[test]
    fn a_point_is_located_in_the_most_specific_area() {
        let square = |x0: f64, y0: f64, d: f64| {
            format!(
                r#"{{"type":"Feature","properties":{{}},"geometry":{{"type":"Polygon","coordinates":[[[{x0},{y0}],[{x1},{y0}],[{x1},{y1}],[{x0},{y1}],[{x0},{y0}]]]}}}}"#,
                x1 = x0 + d,
                y1 = y0 + d
            )
        };
        let areas = vec![
            area_of_geojson("320211", &square(120.0, 31.0, 1.0)).unwrap(),
            area_of_geojson("320211001", &square(120.2, 31.4, 0.2)).unwrap(),
        ];
        assert_eq!(division_at(&areas, 120.3, 31.5), Some("320211001"));
        assert_eq!(division_at(&areas, 120.8, 31.8), Some("320211"));
        assert_eq!(division_at(&areas, 119.0, 31.5), None);
        let mut f = form(&[("lat", "31.5"), ("long", "120.3"), ("description", "d")]);
        locate(&mut f, &areas).unwrap();
        assert!(f.contains(&("address_id".to_string(), "320211001".to_string())));
        let mut outside = form(&[("lat", "40.0"), ("long", "116.4")]);
        assert!(locate(&mut outside, &areas).unwrap_err().description.starts_with("lat"));
        let mut bad = form(&[("lat", "north"), ("long", "116.4")]);
        assert!(locate(&mut bad, &areas).unwrap_err().description.starts_with("lat"));
        assert!(area_of_geojson("x", r#"{"type":"Point","coordinates":[1,2]}"#).is_err());
    }

    #[test]
    fn a_case_is_closed_for_311_once_the_opinion_is_delivered() {
        assert_eq!(status(Stage::Accepted), "open");
        assert_eq!(status(Stage::Replied), "closed");
        assert_eq!(status(Stage::ReviewRequested), "open");
    }
}
