//! Meta-profiles: model routing for the SDK's `classify_and_switch_llm`. Either task classes, each
//! sending its kind of task to a saved LLM profile, or a direct-routing prompt template; every
//! model named is a profile name. The rules are the SDK's (`openhands.sdk.llm.meta_profile_store`,
//! 1.58.2).
use super::Violation;

/// One task class and the profile that handles it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaProfileClass {
    /// The kind of task, in words.
    pub description: String,
    /// The profile to switch to.
    pub model: String,
}

/// One meta-profile (its name is the file's, not a field).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaProfile {
    /// The profile that classifies the task.
    pub classifier_model: String,
    /// Task classes, in order.
    pub classes: Vec<MetaProfileClass>,
    /// A direct-routing prompt: it must hold `{{ instance_text }}` and excludes classes.
    pub prompt_template: Option<String>,
    /// Text for the template's `{{ model_table }}`.
    pub model_table: Option<String>,
}

/// Python's `\s` for a `str` pattern: Unicode whitespace plus the separators U+001C to U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Whether `template` holds `{{ instance_text }}`, spaces inside the braces allowed (the SDK's
/// `{{\s*instance_text\s*}}`).
pub fn has_instance_text(template: &str) -> bool {
    template.match_indices("{{").any(|(at, _)| {
        let rest = template[at + 2..].trim_start_matches(python_space);
        rest.strip_prefix("instance_text")
            .is_some_and(|r| r.trim_start_matches(python_space).starts_with("}}"))
    })
}

impl MetaProfile {
    /// Every rule a stored meta-profile keeps; `prefix` is its field path.
    pub fn violations(&self, prefix: &str) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Some(template) = &self.prompt_template {
            let field = format!("{prefix}.prompt_template");
            if !has_instance_text(template) {
                out.push(Violation::new(
                    field.clone(),
                    "a direct-routing template must include {{ instance_text }}",
                ));
            }
            if !self.classes.is_empty() {
                out.push(Violation::new(
                    field,
                    "a direct-routing meta-profile cannot also define classes",
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_rule_is_the_sdks_regex() {
        for (template, holds) in [
            ("{{ instance_text }}", true),
            ("x {{instance_text}} y", true),
            ("{{\t\n instance_text \u{1f}}}", true),
            ("{{ {{ instance_text }}", true),
            ("{ instance_text }", false),
            ("{{ instance-text }}", false),
            ("{{ instance_text }", false),
            ("", false),
        ] {
            assert_eq!(has_instance_text(template), holds, "{template:?}");
        }
    }
}
