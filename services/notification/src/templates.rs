//! The notices' text: minijinja templates, the Chinese defaults of
//! [`xinfang_shared::notice::TEMPLATES`] overridden by `[notification.templates]`. Every template
//! is compiled at start, so a broken one stops the service with its name, not a notice later.

use minijinja::Environment;
use serde_json::Value;
use xinfang_shared::notice::TEMPLATES;

/// The compiled templates of a node.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles the defaults and the node's overrides; refuses unknown names and bad syntax.
    pub fn new(overrides: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            let text = overrides.get(*name).cloned().unwrap_or_else(|| text.to_string());
            env.add_template_owned(name.to_string(), text)
                .map_err(|e| format!("notification.templates.{name}: {e}"))?;
        }
        if let Some(unknown) = overrides.keys().find(|k| !TEMPLATES.iter().any(|(n, _)| n == k)) {
            let names: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
            return Err(format!("notification.templates.{unknown}: no such template (known: {})", names.join(", ")));
        }
        Ok(Self { env })
    }

    /// The text of `template` for `context`.
    pub fn render(&self, template: &str, context: &Value) -> Result<String, String> {
        let t = self.env.get_template(template).map_err(|e| e.to_string())?;
        t.render(context).map_err(|e| format!("template {template}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_render_with_the_required_content() {
        let t = Templates::new(&Default::default()).unwrap();
        let text = t
            .render("receipt", &json!({"name": "张三", "title": "电梯", "registered_at": "2026年11月27日", "case_id": "320211-20261127-000001", "query_code": "ABC234"}))
            .unwrap();
        assert!(text.contains("320211-20261127-000001") && text.contains("ABC234"), "{text}");
        let text = t
            .render("reply_delivery", &json!({"opinion": "处理意见书", "summary": "已维修", "next_step": "复查", "window_due": "2026年12月27日", "case_id": "c"}))
            .unwrap();
        assert!(text.contains("请求复查") && text.contains("2026年12月27日"), "{text}");
        let text =
            t.render("reply_delivery", &json!({"opinion": "复核意见书", "summary": "维持", "case_id": "c"})).unwrap();
        assert!(text.contains("不再受理"), "{text}");
    }

    #[test]
    fn overrides_are_checked() {
        let mut o = std::collections::BTreeMap::new();
        o.insert("receipt".to_string(), "{{ case_id }} / {{ query_code }}".to_string());
        let t = Templates::new(&o).unwrap();
        assert_eq!(t.render("receipt", &json!({"case_id": "c1", "query_code": "Q"})).unwrap(), "c1 / Q");
        o.insert("receipt".to_string(), "{% if %}".to_string());
        assert!(Templates::new(&o).err().unwrap().contains("notification.templates.receipt"));
        let mut o = std::collections::BTreeMap::new();
        o.insert("recept".to_string(), "x".to_string());
        assert!(Templates::new(&o).err().unwrap().contains("no such template"));
    }
}
