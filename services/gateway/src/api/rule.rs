//! What a method's options say about its HTTP exposure: its
//! `google.api.http` rule (with `additional_bindings`) and its
//! `mesh.gateway.v1.access` option, read from the descriptors and checked
//! against the request and response messages.

use mesh::proto::{gateway::v1::Access as AccessOption, google::api::HttpRule};
use prost_reflect::{
    DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, Value,
};

use super::{
    template::{Template, TemplateError},
    ApiError,
};

/// The `google.api.http` extension's full name.
pub const HTTP_EXTENSION: &str = "google.api.http";
/// The `mesh.gateway.v1.access` extension's full name.
pub const ACCESS_EXTENSION: &str = "mesh.gateway.v1.access";

/// Where a binding's request body goes.
#[derive(Debug, Clone)]
pub enum BodyTarget {
    /// No body: fields not bound by the path come from the query string.
    None,
    /// `body: "*"`: every field not bound by the path.
    Whole,
    /// `body: "<field>"`: this top-level field; the rest from the query.
    Field(FieldDescriptor),
}

/// One HTTP binding of a method (the rule itself or one of its
/// `additional_bindings`).
#[derive(Debug, Clone)]
pub struct Binding {
    /// The HTTP method.
    pub verb: http::Method,
    /// The path template.
    pub template: Template,
    /// Where the body goes.
    pub body: BodyTarget,
    /// The response field sent as the body (`None`: the whole response).
    pub response_body: Option<FieldDescriptor>,
    /// The request fields each path variable fills, in the template's order.
    pub path_fields: Vec<Vec<FieldDescriptor>>,
}

impl Binding {
    /// Whether the top-level field `name` is filled by the path.
    pub fn binds_in_path(&self, field: &FieldDescriptor) -> bool {
        self.path_fields
            .iter()
            .any(|path| path.len() == 1 && path[0] == *field)
    }
}

/// Who may call a method from outside the mesh.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Callable without a token.
    pub public: bool,
    /// A request field that must equal the caller's subject.
    pub subject_field: Option<Vec<FieldDescriptor>>,
}

/// The `google.api.http` and `mesh.gateway.v1.access` extensions of a pool
/// (absent when no file of the pool declares them).
#[derive(Debug, Clone)]
pub(crate) struct Extensions {
    http: Option<ExtensionDescriptor>,
    access: Option<ExtensionDescriptor>,
}

impl Extensions {
    pub(crate) fn of(pool: &DescriptorPool) -> Self {
        Self {
            http: pool.get_extension_by_name(HTTP_EXTENSION),
            access: pool.get_extension_by_name(ACCESS_EXTENSION),
        }
    }

    /// The method's HTTP rule, when it has one.
    pub(crate) fn http_rule(&self, method: &MethodDescriptor) -> Option<HttpRule> {
        let extension = self.http.as_ref()?;
        let options = method.options();
        if !options.has_extension(extension) {
            return None;
        }
        match options.get_extension(extension).as_ref() {
            Value::Message(message) => message.transcode_to::<HttpRule>().ok(),
            _ => None,
        }
    }

    /// The method's access option (the default when absent).
    pub(crate) fn access(&self, method: &MethodDescriptor) -> AccessOption {
        let Some(extension) = self.access.as_ref() else {
            return AccessOption::default();
        };
        let options = method.options();
        if !options.has_extension(extension) {
            return AccessOption::default();
        }
        match options.get_extension(extension).as_ref() {
            Value::Message(message) => message.transcode_to::<AccessOption>().unwrap_or_default(),
            _ => AccessOption::default(),
        }
    }
}

/// The bindings of `rule` (itself, then its `additional_bindings`), checked.
pub(crate) fn bindings(
    method: &MethodDescriptor,
    rule: &HttpRule,
) -> Result<Vec<Binding>, ApiError> {
    let mut bindings = vec![binding(method, rule)?];
    for additional in &rule.additional_bindings {
        if !additional.additional_bindings.is_empty() {
            return Err(invalid(
                method,
                "an additional binding cannot have bindings of its own",
            ));
        }
        bindings.push(binding(method, additional)?);
    }
    Ok(bindings)
}

fn binding(method: &MethodDescriptor, rule: &HttpRule) -> Result<Binding, ApiError> {
    use mesh::proto::google::api::http_rule::Pattern;
    let (verb, path) = match &rule.pattern {
        Some(Pattern::Get(path)) => (http::Method::GET, path.as_str()),
        Some(Pattern::Put(path)) => (http::Method::PUT, path.as_str()),
        Some(Pattern::Post(path)) => (http::Method::POST, path.as_str()),
        Some(Pattern::Delete(path)) => (http::Method::DELETE, path.as_str()),
        Some(Pattern::Patch(path)) => (http::Method::PATCH, path.as_str()),
        Some(Pattern::Custom(custom)) => {
            let verb = http::Method::from_bytes(custom.kind.as_bytes())
                .map_err(|_| invalid(method, format!("invalid custom verb {:?}", custom.kind)))?;
            (verb, custom.path.as_str())
        }
        None => return Err(invalid(method, "the rule names no verb and path")),
    };
    let template =
        Template::parse(path).map_err(|error: TemplateError| invalid(method, error.to_string()))?;
    let input = method.input();
    let mut path_fields = Vec::with_capacity(template.variables.len());
    for variable in &template.variables {
        let fields = field_path(&input, &variable.field_path).map_err(|reason| {
            invalid(
                method,
                format!("path variable {{{}}}: {reason}", variable.name()),
            )
        })?;
        let leaf = fields.last().expect("a field path has a field");
        if leaf.is_list() || leaf.is_map() || !is_text_settable(leaf) {
            return Err(invalid(
                method,
                format!(
                    "path variable {{{}}} must name a singular scalar field",
                    variable.name()
                ),
            ));
        }
        path_fields.push(fields);
    }
    let body = match rule.body.as_str() {
        "" => BodyTarget::None,
        "*" => BodyTarget::Whole,
        name => {
            let field = input.get_field_by_name(name).ok_or_else(|| {
                invalid(
                    method,
                    format!(
                        "body field {name:?} is not a field of {}",
                        input.full_name()
                    ),
                )
            })?;
            if path_fields.iter().any(|path| path[0] == field) {
                return Err(invalid(
                    method,
                    format!("body field {name:?} is also bound by the path"),
                ));
            }
            BodyTarget::Field(field)
        }
    };
    if matches!(verb, http::Method::GET | http::Method::DELETE) && !matches!(body, BodyTarget::None)
    {
        return Err(invalid(
            method,
            format!("a {verb} binding cannot take a body"),
        ));
    }
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => Some(method.output().get_field_by_name(name).ok_or_else(|| {
            invalid(
                method,
                format!(
                    "response_body {name:?} is not a field of {}",
                    method.output().full_name()
                ),
            )
        })?),
    };
    Ok(Binding {
        verb,
        template,
        body,
        response_body,
        path_fields,
    })
}

/// The method's access rules, checked against its request.
pub(crate) fn access(method: &MethodDescriptor, option: &AccessOption) -> Result<Access, ApiError> {
    let subject_field = if option.subject_field.is_empty() {
        None
    } else {
        let parts: Vec<String> = option.subject_field.split('.').map(str::to_owned).collect();
        let fields = field_path(&method.input(), &parts)
            .map_err(|reason| invalid(method, format!("access subject_field: {reason}")))?;
        let leaf = fields.last().expect("a field path has a field");
        if leaf.is_list() || leaf.kind() != Kind::String {
            return Err(invalid(
                method,
                "access subject_field must name a singular string field",
            ));
        }
        Some(fields)
    };
    Ok(Access {
        public: option.public,
        subject_field,
    })
}

/// Resolves `parts` (proto field names) from `message`: every part but the
/// last must be a singular message field.
pub(crate) fn field_path(
    message: &MessageDescriptor,
    parts: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut fields = Vec::with_capacity(parts.len());
    let mut current = message.clone();
    for (index, part) in parts.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .ok_or_else(|| format!("{part:?} is not a field of {}", current.full_name()))?;
        if index + 1 < parts.len() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                _ => return Err(format!("{part:?} is not a singular message field")),
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Whether a field's value can be written as text (a path segment or a
/// query value): scalars, enums, and the well-known types whose JSON form
/// is a string or a number.
pub fn is_text_settable(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(message) => matches!(
            message.full_name(),
            "google.protobuf.Timestamp"
                | "google.protobuf.Duration"
                | "google.protobuf.FieldMask"
                | "google.protobuf.StringValue"
                | "google.protobuf.BytesValue"
                | "google.protobuf.BoolValue"
                | "google.protobuf.Int32Value"
                | "google.protobuf.Int64Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.UInt64Value"
                | "google.protobuf.FloatValue"
                | "google.protobuf.DoubleValue"
        ),
        _ => true,
    }
}

fn invalid(method: &MethodDescriptor, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidRule {
        method: method.full_name().to_owned(),
        reason: reason.into(),
    }
}
