//! YAML and JSON documents, with errors that name the file and the line.

use crate::error::{BundleError, Result};
use serde_json::Value;

/// Every non-empty document of a YAML (or JSON) stream.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| yaml_error(file, &e))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// A single document; an empty file is `null`.
pub fn parse_document(file: &str, text: &str) -> Result<Value> {
    let mut docs = parse_documents(file, text)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.remove(0)),
        n => Err(BundleError::InvalidYaml {
            file: file.to_owned(),
            line: 1,
            format: format_of(file),
            message: format!("expected one document, found {n}"),
        }),
    }
}

fn yaml_error(file: &str, e: &serde_saphyr::Error) -> BundleError {
    let line = e.location().map(|l| l.line() as usize).unwrap_or(0);
    let mut root = e.without_snippet();
    while let serde_saphyr::Error::AliasError { error, .. } = root {
        root = error.without_snippet();
    }
    let message = match root {
        serde_saphyr::Error::Budget { breach, .. } => budget_message(breach),
        // The rendered error carries a source snippet; the first line is
        // the message itself.
        _ => strip_location(e.to_string().lines().next().unwrap_or_default().trim()),
    };
    BundleError::InvalidYaml {
        file: file.to_owned(),
        line,
        format: format_of(file),
        message,
    }
}

/// What a file is parsed as, for messages: JSON for `.json` files.
pub fn format_of(file: &str) -> &'static str {
    if file.to_ascii_lowercase().ends_with(".json") {
        "JSON"
    } else {
        "YAML"
    }
}

/// The parser's resource limits, in words rather than Rust's debug text.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let what = match breach {
        B::Events { events } => format!("{events} parser events"),
        B::Aliases { aliases } => format!("{aliases} aliases"),
        B::Anchors { anchors } => format!("{anchors} anchors"),
        B::Depth { depth } => format!("nesting {depth} levels deep"),
        B::Documents { documents } => format!("{documents} documents"),
        B::Nodes { nodes } => format!("{nodes} nodes"),
        B::ScalarBytes { total_scalar_bytes } => format!("{total_scalar_bytes} bytes of scalars"),
        B::MergeKeys { merge_keys } => format!("{merge_keys} merge keys"),
        B::AliasAnchorRatio { aliases, anchors } => {
            format!("{aliases} aliases for {anchors} anchors (an alias bomb)")
        }
        B::InputBytes { input_bytes } => format!("{input_bytes} bytes of input"),
        other => describe_breach(other),
    };
    format!("the document is too large or too complex: {what} is over the parser's limit")
}

fn describe_breach(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    // Breaches without a dedicated wording above: the variant's name only.
    let debug = format!("{breach:?}");
    let name = debug.split([' ', '{', '(']).next().unwrap_or("limit");
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    format!("its {words}")
}

/// "error: line 5 column 5: what" -> "column 5: what": the line is
/// reported separately.
fn strip_location(message: &str) -> String {
    let m = message.strip_prefix("error: ").unwrap_or(message);
    match m
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(' '))
    {
        Some((_, rest)) => rest.to_owned(),
        None => m.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_streams_skip_empty_documents() {
        let docs = parse_documents("m.yaml", "a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(
            docs,
            [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]
        );
        let json = parse_documents("m.json", r#"{"kind": "ConfigMap"}"#).unwrap();
        assert_eq!(json[0]["kind"], "ConfigMap");
    }

    #[test]
    fn broken_yaml_names_file_and_line() {
        let err = parse_documents("dir/broken.yaml", "a: 1\nb: [unclosed\nc: 3\n").unwrap_err();
        match &err {
            BundleError::InvalidYaml { file, line, .. } => {
                assert_eq!(file, "dir/broken.yaml");
                assert!(*line >= 2, "line {line}: {err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("dir/broken.yaml:"), "{err}");
    }

    #[test]
    fn json_files_are_reported_as_json() {
        let err = parse_documents("app/cm.json", "{\"a\": [1,}").unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
        let err = parse_documents("app/cm.yaml", "a: [1,").unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn parser_budgets_are_reported_in_words() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let err = parse_documents("deep.yaml", &deep).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("too large or too complex"), "{text}");
        assert!(text.contains("levels deep"), "{text}");
        assert!(
            !text.contains("Depth {") && !text.contains("BudgetBreach"),
            "{text}"
        );
    }
}
