//! The SDK's meta-profile files, `meta-profiles/<name>.json`: `json.dumps(model_dump, indent=2)` of
//! `{classifier_model, classes: [{description, model}], prompt_template, model_table}`, nulls kept,
//! no name and no schema_version inside. Read with the SDK's rules: unknown keys are dropped (as
//! pydantic does), a template must hold `{{ instance_text }}` and excludes classes.
use serde_json::{Map, Value};

use crate::domain::pyjson::dumps_indent2;
use crate::domain::{MetaProfile, MetaProfileClass};

/// The folder's name in the SDK's persistence folder.
pub const DIR_NAME: &str = "meta-profiles";

fn string(map: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}{key} must be a string")),
    }
}

fn required(map: &Map<String, Value>, key: &str, at: &str) -> Result<String, String> {
    string(map, key, at)?.ok_or_else(|| format!("{at}{key} is required"))
}

/// Reads a meta-profile file's text.
pub fn parse_file(text: &str) -> Result<MetaProfile, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("the file is not a JSON object".into());
    };
    parse_object(&map)
}

/// Reads a meta-profile's object (a file's, or a stored document's).
pub fn parse_object(map: &Map<String, Value>) -> Result<MetaProfile, String> {
    let classes = match map.get("classes") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("classes[{i}].");
                let Value::Object(c) = c else {
                    return Err(format!("classes[{i}] must be an object"));
                };
                Ok(MetaProfileClass {
                    description: required(c, "description", &at)?,
                    model: required(c, "model", &at)?,
                })
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("classes must be a list".into()),
    };
    let meta = MetaProfile {
        classifier_model: required(map, "classifier_model", "")?,
        classes,
        prompt_template: string(map, "prompt_template", "")?,
        model_table: string(map, "model_table", "")?,
    };
    match meta.violations("meta_profile").first() {
        Some(v) => Err(v.to_string()),
        None => Ok(meta),
    }
}

/// The file text the SDK would write for `meta`.
pub fn to_file_text(meta: &MetaProfile) -> String {
    dumps_indent2(&Value::Object(to_object(meta)))
}

/// The object the SDK dumps for `meta`, keys in its model's order.
pub fn to_object(meta: &MetaProfile) -> Map<String, Value> {
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    let classes = meta
        .classes
        .iter()
        .map(|c| {
            let mut map = Map::with_capacity(2);
            map.insert("description".into(), Value::String(c.description.clone()));
            map.insert("model".into(), Value::String(c.model.clone()));
            Value::Object(map)
        })
        .collect();
    let mut map = Map::with_capacity(4);
    map.insert(
        "classifier_model".into(),
        Value::String(meta.classifier_model.clone()),
    );
    map.insert("classes".into(), Value::Array(classes));
    map.insert("prompt_template".into(), text(&meta.prompt_template));
    map.insert("model_table".into(), text(&meta.model_table));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_sdk_reads_and_refuses_the_rest() {
        let minimal = parse_file("{\"classifier_model\": \"small\", \"extra\": 1}").unwrap();
        assert_eq!(
            to_file_text(&minimal),
            "{\n  \"classifier_model\": \"small\",\n  \"classes\": [],\n  \"prompt_template\": null,\n  \"model_table\": null\n}"
        );
        for (text, want) in [
            ("[]", "not a JSON object"),
            ("{}", "classifier_model is required"),
            ("{\"classifier_model\": 1}", "classifier_model must be a string"),
            ("{\"classifier_model\": \"m\", \"classes\": [{\"model\": \"x\"}]}", "classes[0].description is required"),
            ("{\"classifier_model\": \"m\", \"prompt_template\": \"no slot\"}", "{{ instance_text }}"),
            (
                "{\"classifier_model\": \"m\", \"prompt_template\": \"{{ instance_text }}\", \"classes\": [{\"description\": \"d\", \"model\": \"x\"}]}",
                "cannot also define classes",
            ),
        ] {
            let err = parse_file(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
