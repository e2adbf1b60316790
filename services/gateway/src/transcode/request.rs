//! An HTTP request → the RPC's request message.
//!
//! The request is assembled as one proto3-JSON object — the body (or the
//! body field), then the path variables, then the query parameters, each
//! written at its field path — and deserialized once with unknown fields
//! denied, so every rule of the proto3 JSON mapping (lowerCamelCase or
//! proto names, int64 as strings or numbers, enum names) and every error
//! message comes from one place.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::api::{rule, Binding, BodyTarget};

/// At most this many query parameters are read.
const MAX_QUERY_PARAMETERS: usize = 64;

/// Why a request cannot become the RPC's request (a 400, or 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not valid JSON, or not an object where one is needed.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// Valid JSON that does not fit the message (a wrong type, an unknown field…).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A body where the binding takes none.
    #[error("{0} takes no request body")]
    UnexpectedBody(String),
    /// A body that is not `application/json`.
    #[error("the request body must be JSON, not {0:?}: send Content-Type: application/json")]
    UnsupportedMediaType(String),
}

/// Builds the request message of `binding` (of a method whose request is
/// `input`) from the path variables, the raw query and the body.
pub fn build(
    input: &MessageDescriptor,
    binding: &Binding,
    path_values: &[(Vec<String>, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, RequestError> {
    let mut root = Map::new();
    let body = trim_ascii(body);
    match &binding.body {
        BodyTarget::None => {
            if !body.is_empty() {
                return Err(RequestError::UnexpectedBody(format!(
                    "{} {}",
                    binding.verb, binding.template
                )));
            }
        }
        BodyTarget::Whole => {
            if !body.is_empty() {
                match parse_json(body)? {
                    Value::Object(object) => root = object,
                    other => {
                        return Err(RequestError::Invalid(format!(
                            "the body must be a JSON object, not {}",
                            json_type(&other)
                        )))
                    }
                }
            }
        }
        BodyTarget::Field(field) => {
            if !body.is_empty() {
                root.insert(field.json_name().to_owned(), parse_json(body)?);
            }
        }
    }
    for (path, value) in path_values {
        let fields = rule::field_path(input, path).map_err(RequestError::Invalid)?;
        set(&mut root, &fields, value, "path")?;
    }
    if let Some(query) = query.filter(|query| !query.is_empty()) {
        for (count, (key, value)) in form_urlencoded::parse(query.as_bytes()).enumerate() {
            if count >= MAX_QUERY_PARAMETERS {
                return Err(RequestError::Invalid(format!(
                    "more than {MAX_QUERY_PARAMETERS} query parameters"
                )));
            }
            let fields = query_field(input, binding, &key)?;
            set(&mut root, &fields, &value, "query")?;
        }
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(input.clone(), Value::Object(root), &options)
        .map_err(|error| RequestError::Invalid(crate::bounded(&error.to_string())))
}

/// The field a query key names (dotted, proto or JSON names), if the
/// binding lets the query set it.
fn query_field(
    input: &MessageDescriptor,
    binding: &Binding,
    key: &str,
) -> Result<Vec<FieldDescriptor>, RequestError> {
    let unknown = || {
        RequestError::Invalid(format!(
            "unknown query parameter {:?} for {} {}",
            crate::bounded(key),
            binding.verb,
            binding.template
        ))
    };
    if matches!(binding.body, BodyTarget::Whole) {
        return Err(RequestError::Invalid(format!(
            "{} {} takes its fields from the JSON body, not the query string ({:?})",
            binding.verb,
            binding.template,
            crate::bounded(key)
        )));
    }
    let mut fields = Vec::new();
    let mut message = input.clone();
    let parts: Vec<&str> = key.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        let field = message
            .get_field_by_name(part)
            .or_else(|| message.get_field_by_json_name(part))
            .ok_or_else(unknown)?;
        if index + 1 < parts.len() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => message = next,
                _ => return Err(unknown()),
            }
        }
        fields.push(field);
    }
    let leaf = fields.last().ok_or_else(unknown)?;
    if leaf.is_map() || !rule::is_text_settable(leaf) {
        return Err(RequestError::Invalid(format!(
            "query parameter {:?} names a message field; send it in a JSON body",
            crate::bounded(key)
        )));
    }
    let first = &fields[0];
    let bound_by_body = matches!(&binding.body, BodyTarget::Field(field) if field == first);
    let bound_by_path = binding
        .path_fields
        .iter()
        .any(|path| path.starts_with(&fields) || fields.starts_with(path));
    if bound_by_body || bound_by_path {
        return Err(RequestError::Invalid(format!(
            "query parameter {:?} sets a field the {} already sets",
            crate::bounded(key),
            if bound_by_body { "body" } else { "path" }
        )));
    }
    Ok(fields)
}

/// Writes the text `value` at `fields` in the JSON object (replacing what the
/// body said there, under either field name).
fn set(
    root: &mut Map<String, Value>,
    fields: &[FieldDescriptor],
    value: &str,
    source: &str,
) -> Result<(), RequestError> {
    let (leaf, parents) = fields.split_last().expect("a field path has a field");
    let mut object = root;
    for parent in parents {
        let key = parent.json_name().to_owned();
        if let Some(existing) = object.remove(parent.name()) {
            object.entry(key.clone()).or_insert(existing);
        }
        let entry = object
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        object = match entry {
            Value::Object(inner) => inner,
            _ => {
                return Err(RequestError::Invalid(format!(
                    "{} must be an object to set {} from the {source}",
                    parent.json_name(),
                    leaf.name()
                )))
            }
        };
    }
    let json = text_to_json(leaf, value, source)?;
    if leaf.is_list() {
        if let Some(existing) = object.remove(leaf.name()) {
            object
                .entry(leaf.json_name().to_owned())
                .or_insert(existing);
        }
        match object
            .entry(leaf.json_name().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(json),
            _ => {
                return Err(RequestError::Invalid(format!(
                    "{} is a list",
                    leaf.json_name()
                )))
            }
        }
    } else {
        object.remove(leaf.name());
        object.insert(leaf.json_name().to_owned(), json);
    }
    Ok(())
}

/// A path or query value as the JSON the proto3 mapping expects for the
/// field: booleans as JSON booleans, everything else as a JSON string
/// (which the mapping accepts for every number type).
fn text_to_json(field: &FieldDescriptor, value: &str, source: &str) -> Result<Value, RequestError> {
    let boolean = match field.kind() {
        Kind::Bool => true,
        Kind::Message(message) => message.full_name() == "google.protobuf.BoolValue",
        _ => false,
    };
    if boolean {
        return match value {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(RequestError::Invalid(format!(
                "{} ({source}) must be true or false, not {:?}",
                field.json_name(),
                crate::bounded(other)
            ))),
        };
    }
    Ok(Value::String(value.to_owned()))
}

fn parse_json(body: &[u8]) -> Result<Value, RequestError> {
    serde_json::from_slice(body)
        .map_err(|error| RequestError::MalformedJson(crate::bounded(&error.to_string())))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use prost_reflect::ReflectMessage;

    use super::*;
    use crate::api::Api;

    fn request(
        verb: http::Method,
        path_and_query: &str,
        body: &str,
    ) -> Result<serde_json::Value, RequestError> {
        let api = Api::load(&[]).unwrap();
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let found = api.router().route(&verb, path).expect("a route");
        let message = build(
            &found.method.descriptor.input(),
            found.binding(),
            &found.path_values,
            query,
            body.as_bytes(),
        )?;
        let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
        let mut out = serde_json::Serializer::new(Vec::new());
        message.serialize_with_options(&mut out, &options).unwrap();
        assert!(!message.descriptor().full_name().is_empty());
        Ok(serde_json::from_slice(&out.into_inner()).unwrap())
    }

    #[test]
    fn body_star_takes_camel_case_and_proto_names_and_int64_strings() {
        let placed = request(
            http::Method::POST,
            "/v1/orders",
            r#"{"requestId":"r1","user_id":"u_1","items":[{"sku":"A","quantity":"2"},{"sku":"B","quantity":3}]}"#,
        )
        .unwrap();
        assert_eq!(
            placed,
            serde_json::json!({"request_id":"r1","user_id":"u_1","items":[{"sku":"A","quantity":"2"},{"sku":"B","quantity":"3"}]})
        );
        // An empty body is an empty message.
        assert_eq!(
            request(http::Method::POST, "/v1/orders/o_1:cancel", "").unwrap(),
            serde_json::json!({"order_id":"o_1"})
        );
    }

    #[test]
    fn path_and_query_fill_the_rest() {
        assert_eq!(
            request(
                http::Method::GET,
                "/v1/users/u_1/orders?pageSize=5&page_token=abc",
                ""
            )
            .unwrap(),
            serde_json::json!({"user_id":"u_1","page_size":5,"page_token":"abc"})
        );
        assert_eq!(
            request(http::Method::GET, "/v1/orders?userId=u%201", "").unwrap(),
            serde_json::json!({"user_id":"u 1"})
        );
    }

    #[test]
    fn path_values_win_over_the_body() {
        assert_eq!(
            request(
                http::Method::POST,
                "/v1/orders/o_1:cancel",
                r#"{"order_id":"o_2"}"#
            )
            .unwrap(),
            serde_json::json!({"order_id":"o_1"})
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases: &[(http::Method, &str, &str, &str)] = &[
            (http::Method::POST, "/v1/orders", "{", "not valid JSON"),
            (
                http::Method::POST,
                "/v1/orders",
                "[1]",
                "must be a JSON object",
            ),
            (http::Method::POST, "/v1/orders", r#"{"nope":1}"#, "nope"),
            (
                http::Method::POST,
                "/v1/orders",
                r#"{"items":"x"}"#,
                "invalid request",
            ),
            (
                http::Method::POST,
                "/v1/orders",
                r#"{"items":[{"quantity":"two"}]}"#,
                "invalid request",
            ),
            (
                http::Method::GET,
                "/v1/items/A",
                "{}",
                "takes no request body",
            ),
            (
                http::Method::GET,
                "/v1/items/A?color=red",
                "",
                "unknown query parameter \"color\"",
            ),
            (http::Method::GET, "/v1/items/A?sku=B", "", "already sets"),
            (
                http::Method::POST,
                "/v1/orders?userId=u",
                "{}",
                "from the JSON body",
            ),
            (
                http::Method::GET,
                "/v1/users/u/orders?pageSize=x",
                "",
                "invalid request",
            ),
            (
                http::Method::GET,
                "/v1/users/u/orders?pageSize=99999999999",
                "",
                "invalid request",
            ),
        ];
        for (verb, path, body, expected) in cases {
            let error = request(verb.clone(), path, body).unwrap_err().to_string();
            assert!(error.contains(expected), "{verb} {path} {body}: {error}");
        }
    }
}
