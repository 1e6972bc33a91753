//! Query parameters: a route takes only those the OpenAPI document lists
//! for it (`"in": "query"`); any other is refused with 400, so a typo
//! (`?timeout=5` for `?timeout_secs=5`) is not silently ignored.

use std::sync::OnceLock;

use crate::error::ApiError;

/// The query parameters documented for `method` on `pattern`.
fn documented(method: &str, pattern: &str) -> Vec<String> {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| serde_json::from_str(super::OPENAPI).unwrap_or_default());
    let op = &doc["paths"][pattern][method.to_ascii_lowercase()];
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect()
}

/// Refuses a query with a parameter the route does not take.
pub fn check(method: &str, pattern: &str, query: &str) -> Result<(), ApiError> {
    if query.is_empty() {
        return Ok(());
    }
    let known = documented(method, pattern);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !known.iter().any(|k| k == key) {
            let takes = if known.is_empty() {
                "takes no query parameters".to_string()
            } else {
                format!("takes: {}", known.join(", "))
            };
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{key}': {method} {pattern} {takes}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_parameters_pass_others_are_refused() {
        assert!(check("POST", "/vms/{name}/shutdown", "timeout_secs=5").is_ok());
        assert!(check("GET", "/audit", "vm=a&limit=3").is_ok());
        let e = check("POST", "/vms/{name}/shutdown", "timeout=5").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("'timeout'"), "{}", e.message);
        assert!(e.message.contains("timeout_secs"), "{}", e.message);
        let e = check("GET", "/vms", "all=1").unwrap_err();
        assert!(e.message.contains("takes no query"), "{}", e.message);
        assert!(check("GET", "/vms", "").is_ok());
    }
}
