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
            message: format!("expected one document, found {n}"),
        }),
    }
}

fn yaml_error(file: &str, e: &serde_saphyr::Error) -> BundleError {
    let line = e.location().map(|l| l.line() as usize).unwrap_or(0);
    // The rendered error carries a source snippet; the first line is the
    // message itself.
    let message = strip_location(e.to_string().lines().next().unwrap_or_default().trim());
    BundleError::InvalidYaml {
        file: file.to_owned(),
        line,
        message,
    }
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
}
