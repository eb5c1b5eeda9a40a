//! The Wuxi example's node files (`deploy/wuxi/`, DESIGN.md §8), built into the binary so that
//! `xinfang up --demo` and `xinfang node init` work from the binary alone.

/// Each node file by its node code; the city (hub) first.
pub const FILES: &[(&str, &str)] = &[
    ("320200", include_str!("../../deploy/wuxi/320200.toml")),
    ("320205", include_str!("../../deploy/wuxi/320205.toml")),
    ("320206", include_str!("../../deploy/wuxi/320206.toml")),
    ("320211", include_str!("../../deploy/wuxi/320211.toml")),
    ("320213", include_str!("../../deploy/wuxi/320213.toml")),
    ("320214", include_str!("../../deploy/wuxi/320214.toml")),
    ("320281", include_str!("../../deploy/wuxi/320281.toml")),
    ("320282", include_str!("../../deploy/wuxi/320282.toml")),
];

/// The example node file of `code`.
pub fn file(code: &str) -> Option<&'static str> {
    FILES.iter().find(|(c, _)| *c == code).map(|(_, t)| *t)
}
