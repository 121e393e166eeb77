//! Object limits the API server enforces on what a bundle deploys, checked
//! before anything is sent: a ConfigMap's or Secret's data may hold at most
//! 1 MiB (kube-apiserver's `MaxSecretSize`, and the same for ConfigMaps).

use serde_json::Value;

/// The most data one ConfigMap or Secret may hold.
pub const MAX_CONFIG_DATA_BYTES: usize = 1 << 20;

/// Checks one manifest; the error says which object and how large.
pub fn check_object(object: &Value) -> Result<(), String> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let size = match kind {
        // Keys and values of data and binaryData, as Kubernetes counts them.
        "ConfigMap" => ["data", "binaryData"]
            .iter()
            .filter_map(|f| object.get(*f).and_then(Value::as_object))
            .flatten()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum(),
        // Decoded values of data, plus stringData.
        "Secret" => {
            let data: usize = object
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(_, v)| v.as_str().map_or(0, |s| s.len() / 4 * 3))
                .sum();
            let string_data: usize = object
                .get("stringData")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(_, v)| v.as_str().map_or(0, str::len))
                .sum();
            data + string_data
        }
        _ => return Ok(()),
    };
    if size > MAX_CONFIG_DATA_BYTES {
        return Err(format!(
            "{kind} {name:?} holds {size} bytes of data, over the {MAX_CONFIG_DATA_BYTES}-byte limit the API server enforces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_data_over_one_mebibyte_is_refused() {
        let big = "x".repeat(MAX_CONFIG_DATA_BYTES);
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": big}});
        let err = check_object(&cm).unwrap_err();
        assert!(
            err.contains("ConfigMap \"big\"") && err.contains("1048577 bytes"),
            "{err}"
        );
        let ok = json!({"kind": "ConfigMap", "metadata": {"name": "ok"}, "data": {"k": "v"}});
        check_object(&ok).unwrap();
        let secret = json!({"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "x".repeat(2 << 20)}});
        assert!(check_object(&secret).is_err());
        check_object(&json!({"kind": "Deployment", "spec": {"x": "y".repeat(2 << 20)}})).unwrap();
    }
}
