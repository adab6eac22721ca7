//! Checks real HTTP exchanges against the project's OpenAPI 3.1 descriptions in
//! `docs/openapi/`: the status must be documented for the operation, the request and answer
//! bodies must validate against their JSON schemas, and documented answer headers must be
//! there. Used by the tests of every service, so that the documents cannot drift from the code.

use std::path::PathBuf;

use serde_json::{Value, json};

/// One OpenAPI document.
pub struct Spec {
    document: Value,
}

/// One exchange to check.
pub struct Exchange<'a> {
    /// The path, e.g. `/v1/authorizations`.
    pub path: &'a str,
    /// The method, lower case.
    pub method: &'a str,
    /// The request body (JSON), if any.
    pub request: Option<&'a [u8]>,
    /// The answer's status.
    pub status: u16,
    /// The answer's content type (without parameters).
    pub content_type: Option<&'a str>,
    /// The answer's body.
    pub body: &'a [u8],
    /// Names of the headers the answer carried (lower case).
    pub headers: Vec<String>,
}

impl Spec {
    /// Loads `docs/openapi/<name>` of this repository.
    pub fn load(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let document: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(document["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "OpenAPI 3.1");
        Self { document }
    }

    fn resolve<'v>(&'v self, value: &'v Value) -> &'v Value {
        match value.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.document.pointer(pointer).unwrap_or_else(|| panic!("unresolved $ref {pointer}")),
            None => value,
        }
    }

    /// Errors of `instance` against `schema` (a schema of this document, `$ref`s resolved
    /// against its components).
    pub fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = match schema {
            Value::Object(map) => map.clone(),
            other => panic!("a schema must be an object, not {other}"),
        };
        root.insert("components".to_owned(), self.document["components"].clone());
        root.insert("$schema".to_owned(), json!("https://json-schema.org/draft/2020-12/schema"));
        let validator = jsonschema::validator_for(&Value::Object(root)).unwrap_or_else(|e| panic!("schema: {e}"));
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect()
    }

    /// Checks a `POST path` of the harness (its answer as [`crate::Answer`]).
    pub fn check_post(&self, path: &str, request: Option<&[u8]>, answer: &crate::Answer) {
        let content_type = answer.content_type.as_deref().map(|t| t.split(';').next().unwrap_or("").trim());
        self.check(&Exchange {
            path,
            method: "post",
            request,
            status: answer.status,
            content_type,
            body: &answer.body,
            headers: answer.header_names.clone(),
        });
    }

    /// Checks one exchange; panics with every difference found.
    pub fn check(&self, exchange: &Exchange<'_>) {
        let operation = &self.document["paths"][exchange.path][exchange.method];
        assert!(operation.is_object(), "{} {} is not documented", exchange.method, exchange.path);
        if let Some(request) = exchange.request {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            let instance: Value = serde_json::from_slice(request).expect("the request is JSON");
            let errors = self.errors(schema, &instance);
            assert!(errors.is_empty(), "request to {}: {errors:?}", exchange.path);
        }
        let response = operation["responses"].get(exchange.status.to_string()).map(|r| self.resolve(r));
        let Some(response) = response else {
            panic!("status {} of {} {} is not documented", exchange.status, exchange.method, exchange.path)
        };
        if let Some(headers) = response["headers"].as_object() {
            for (name, header) in headers {
                let required = self.resolve(header)["required"].as_bool().unwrap_or(false);
                assert!(
                    !required || exchange.headers.contains(&name.to_ascii_lowercase()),
                    "{} {} {}: header {name} missing",
                    exchange.method,
                    exchange.path,
                    exchange.status
                );
            }
        }
        if let Some(content) = response["content"].as_object() {
            let content_type = exchange.content_type.unwrap_or("");
            let Some(media) = content.get(content_type) else {
                panic!(
                    "{} {} {}: content type {content_type:?} is not documented",
                    exchange.method, exchange.path, exchange.status
                )
            };
            let instance: Value = serde_json::from_slice(exchange.body).expect("the answer is JSON");
            let errors = self.errors(&media["schema"], &instance);
            assert!(errors.is_empty(), "{} {} {}: {errors:?}", exchange.method, exchange.path, exchange.status);
        }
    }
}
