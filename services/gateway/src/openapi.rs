//! OpenAPI 3.0 from the same annotations the router reads: one operation per
//! binding, its path and query parameters, its JSON body, its response, and
//! every error as `google.rpc.Status`; a schema per message in the proto3
//! JSON mapping (lowerCamelCase, 64-bit integers as strings, enum names).
//! Served at `GET /openapi.json` and committed as `docs/openapi.json`.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};

use crate::api::{Api, Binding, BodyTarget, ExposedMethod};

/// The document.
pub fn document(api: &Api) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for method in api.methods() {
        for (index, binding) in method.bindings.iter().enumerate() {
            let operation = operation(method, index, binding, &mut schemas);
            paths
                .entry(binding.template.openapi_path())
                .or_default()
                .insert(binding.verb.as_str().to_ascii_lowercase(), operation);
        }
    }
    let status = schemas.reference(
        &api.pool()
            .get_message_by_name("google.rpc.Status")
            .expect("google.rpc.Status is in the pool"),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mesh shop API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST/JSON over the mesh's gRPC services, generated from their google.api.http annotations. \
                Errors are google.rpc.Status objects. Methods that are not public need `Authorization: Bearer <JWT>`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.finish(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "responses": {
                "Error": {
                    "description": "The call failed: a google.rpc.Status (its code is the gRPC code; details as proto3 JSON).",
                    "content": {"application/json": {"schema": status}}
                }
            }
        }
    })
}

/// The document as the bytes `GET /openapi.json` serves and `docs/` holds.
pub fn to_bytes(api: &Api) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&document(api)).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

fn operation(
    method: &ExposedMethod,
    index: usize,
    binding: &Binding,
    schemas: &mut Schemas,
) -> Value {
    let descriptor = &method.descriptor;
    let service = descriptor.parent_service().name();
    let mut operation_id = format!("{service}_{}", descriptor.name());
    if index > 0 {
        operation_id.push_str(&format!("_{index}"));
    }
    let input = descriptor.input();
    let mut parameters = Vec::new();
    for (variable, fields) in binding.template.variables.iter().zip(&binding.path_fields) {
        let leaf = fields.last().expect("a field path has a field");
        parameters.push(json!({
            "name": variable.name(),
            "in": "path",
            "required": true,
            "schema": schemas.field(leaf),
        }));
    }
    for wildcard in binding.template.openapi_wildcards() {
        parameters.push(
            json!({"name": wildcard, "in": "path", "required": true, "schema": {"type": "string"}}),
        );
    }
    if !matches!(binding.body, BodyTarget::Whole) {
        for field in input.fields() {
            let in_body = matches!(&binding.body, BodyTarget::Field(body) if *body == field);
            if in_body
                || binding.binds_in_path(&field)
                || field.is_map()
                || !crate::api::rule::is_text_settable(&field)
            {
                continue;
            }
            let mut parameter = json!({
                "name": field.json_name(),
                "in": "query",
                "required": false,
                "schema": schemas.field(&field),
            });
            if field.is_list() {
                parameter["style"] = json!("form");
                parameter["explode"] = json!(true);
            }
            parameters.push(parameter);
        }
    }
    let mut operation = json!({
        "operationId": operation_id,
        "tags": [service],
        "summary": format!("{}.{}", descriptor.parent_service().full_name(), descriptor.name()),
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": response_schema(method, binding, schemas)}}
            },
            "default": {"$ref": "#/components/responses/Error"}
        },
        "security": if method.access.public { json!([]) } else { json!([{"bearer": []}]) },
    });
    if !method.description.is_empty() {
        operation["description"] = json!(method.description);
    }
    match &binding.body {
        BodyTarget::None => {}
        BodyTarget::Whole => {
            operation["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": schemas.message_without(&input, binding)}}
            });
        }
        BodyTarget::Field(field) => {
            operation["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": schemas.field(field)}}
            });
        }
    }
    operation
}

fn response_schema(method: &ExposedMethod, binding: &Binding, schemas: &mut Schemas) -> Value {
    match &binding.response_body {
        Some(field) => schemas.field(field),
        None => schemas.reference(&method.descriptor.output()),
    }
}

/// The component schemas referenced so far.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    fn finish(self) -> BTreeMap<String, Value> {
        self.done
    }

    /// A `$ref` to `message`'s schema (written once).
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_owned();
        if !self.done.contains_key(&name) {
            // Placeholder first: recursive messages refer to themselves.
            self.done.insert(name.clone(), Value::Null);
            let schema = self.object(message, |_| true);
            self.done.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    /// `message` without the fields the binding's path sets (a `body: "*"` body).
    fn message_without(&mut self, message: &MessageDescriptor, binding: &Binding) -> Value {
        if binding.path_fields.iter().all(|path| path.len() > 1) {
            return self.reference(message);
        }
        self.object(message, |field| !binding.binds_in_path(field))
    }

    fn object(
        &mut self,
        message: &MessageDescriptor,
        keep: impl Fn(&FieldDescriptor) -> bool,
    ) -> Value {
        if let Some(well_known) = well_known(message.full_name()) {
            return well_known;
        }
        let mut properties = Map::new();
        for field in message.fields().filter(|field| keep(field)) {
            properties.insert(field.json_name().to_owned(), self.field(&field));
        }
        json!({"type": "object", "properties": properties})
    }

    /// A field's schema: lists and maps of its kind's schema.
    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.kind(&value.kind())});
        }
        let single = self.kind(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": single})
        } else {
            single
        }
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u32})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(descriptor) => {
                let names: Vec<String> = descriptor
                    .values()
                    .map(|value| value.name().to_owned())
                    .collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(message) => match well_known(message.full_name()) {
                Some(schema) => schema,
                None => self.reference(message),
            },
        }
    }
}

/// The proto3 JSON forms of the well-known types.
fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": true
        }),
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => {
            json!({"type": "string", "nullable": true})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean", "nullable": true}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "nullable": true})
        }
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "nullable": true})
        }
        "google.protobuf.FloatValue" | "google.protobuf.DoubleValue" => {
            json!({"type": "number", "nullable": true})
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is what the gateway serves: regenerate it with
    /// `MESH_UPDATE_OPENAPI=1 cargo test -p gateway --lib openapi`.
    #[test]
    fn the_committed_document_matches_the_annotations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = to_bytes(&Api::load(&[]).unwrap());
        if std::env::var_os("MESH_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `MESH_UPDATE_OPENAPI=1 cargo test -p gateway --lib openapi` and commit it"
        );
    }

    #[test]
    fn every_binding_is_an_operation_and_only_those() {
        let api = Api::load(&[]).unwrap();
        let document = document(&api);
        let paths = document["paths"].as_object().unwrap();
        let mut operations: Vec<String> = paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |verb| format!("{verb} {path}"))
            })
            .collect();
        operations.sort();
        assert_eq!(
            operations,
            [
                "get /v1/items/{sku}",
                "get /v1/orders",
                "get /v1/orders/{order_id}",
                "get /v1/orders/{order_id}/shipments",
                "get /v1/shipments/{shipment_id}",
                "get /v1/users/{user_id}",
                "get /v1/users/{user_id}/orders",
                "get /v1/users/{user_id}/shipments",
                "post /v1/orders",
                "post /v1/orders/{order_id}:cancel",
                "post /v1/users",
            ]
        );
        let list = &paths["/v1/users/{user_id}/orders"]["get"];
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["user_id", "pageSize", "pageToken"]);
        assert_eq!(paths["/v1/users"]["post"]["security"], json!([]));
        assert_eq!(
            paths["/v1/orders"]["post"]["security"],
            json!([{"bearer": []}])
        );
        let order = &document["components"]["schemas"]["mesh.orders.v1.Order"];
        assert_eq!(order["properties"]["totalCents"]["type"], "string");
        assert_eq!(
            order["properties"]["status"]["enum"][2],
            "ORDER_STATUS_CONFIRMED"
        );
        // The cancel body leaves out the path's order_id.
        let cancel = &paths["/v1/orders/{order_id}:cancel"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(cancel["properties"], json!({}));
    }
}
