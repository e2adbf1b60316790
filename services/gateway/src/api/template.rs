//! `google.api.http` path templates: parsing and matching.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `*` matches one segment, `**` the rest of the path (zero or more
//! segments, so it may only come last); `{name}` is `{name=*}`. A variable's
//! value is its segments joined by `/`: fully percent-decoded when it spans
//! one segment, decoded except `%2F` when it spans several (a `/` inside a
//! segment stays distinguishable), as grpc-gateway and Envoy do.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text (after percent-decoding the request's segment).
    Literal(String),
    /// `*`: any one non-empty segment.
    Any,
    /// `**`: the rest of the path.
    Rest,
}

/// A variable: the request field it fills and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, e.g. `["order_id"]` or `["shelf", "name"]`.
    pub field_path: Vec<String>,
    /// Index of its first segment in [`Template::segments`].
    pub start: usize,
    /// One past its last segment.
    pub end: usize,
}

impl Variable {
    /// The field path as written (`shelf.name`).
    pub fn name(&self) -> String {
        self.field_path.join(".")
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The source text.
    pub text: String,
    /// Every segment, variables' included.
    pub segments: Vec<Segment>,
    /// The variables, in order.
    pub variables: Vec<Variable>,
    /// The `:verb` suffix, if any.
    pub verb: Option<String>,
}

/// Why a template is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

/// The values a matching path gives the template's variables.
pub type Bindings = Vec<(Vec<String>, String)>;

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Parser::new(text).template()
    }

    /// The variables' values when `path` (the request's raw, percent-encoded
    /// path, without the query) matches; `None` otherwise.
    pub fn matches(&self, path: &str) -> Option<Bindings> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let raw: Vec<&str> = path.split('/').collect();
        // Where each template segment's match starts in `raw`.
        let mut starts = Vec::with_capacity(self.segments.len() + 1);
        let mut at = 0;
        for segment in &self.segments {
            starts.push(at);
            match segment {
                Segment::Literal(literal) => {
                    let candidate = raw.get(at)?;
                    if decode(candidate, true)? != *literal {
                        return None;
                    }
                    at += 1;
                }
                Segment::Any => {
                    if raw.get(at)?.is_empty() {
                        return None;
                    }
                    at += 1;
                }
                Segment::Rest => at = raw.len(),
            }
        }
        starts.push(at);
        if at != raw.len() {
            return None;
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let spanned = &raw[starts[variable.start]..starts[variable.end]];
            let value = if let [single] = spanned {
                if self.segments[variable.start] == Segment::Rest {
                    decode(single, false)?
                } else {
                    decode(single, true)?
                }
            } else {
                let decoded: Option<Vec<String>> =
                    spanned.iter().map(|part| decode(part, false)).collect();
                decoded?.join("/")
            };
            if value.is_empty() {
                return None;
            }
            bindings.push((variable.field_path.clone(), value));
        }
        Some(bindings)
    }

    /// How specific the template is, to pick one when several match: a verb
    /// first, then more literal segments, then fewer wildcards.
    pub fn specificity(&self) -> (bool, usize, std::cmp::Reverse<usize>) {
        let literals = self
            .segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Literal(_)))
            .count();
        let rest = self
            .segments
            .iter()
            .filter(|segment| **segment == Segment::Rest)
            .count();
        (self.verb.is_some(), literals, std::cmp::Reverse(rest))
    }

    /// The path as OpenAPI writes it: `{name}` for each variable (wildcards
    /// outside variables become `{wildcardN}`), then the verb.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut index = 0;
        let mut wildcard = 0;
        while index < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == index) {
                out.push_str(&format!("{{{}}}", variable.name()));
                index = variable.end;
                continue;
            }
            match &self.segments[index] {
                Segment::Literal(literal) => out.push_str(literal),
                Segment::Any | Segment::Rest => {
                    wildcard += 1;
                    out.push_str(&format!("{{wildcard{wildcard}}}"));
                }
            }
            index += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// The names of the unnamed wildcards in [`Template::openapi_path`].
    pub fn openapi_wildcards(&self) -> Vec<String> {
        let inside = |index: usize| {
            self.variables
                .iter()
                .any(|v| (v.start..v.end).contains(&index))
        };
        (0..self.segments.len())
            .filter(|&index| !inside(index) && !matches!(self.segments[index], Segment::Literal(_)))
            .enumerate()
            .map(|(n, _)| format!("wildcard{}", n + 1))
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Percent-decodes one segment; with `slash` false, `%2F` stays encoded.
/// `None` when the result is not UTF-8 or an escape is malformed.
fn decode(segment: &str, slash: bool) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = segment.get(index + 1..index + 3)?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if byte == b'/' && !slash {
                out.extend_from_slice(&bytes[index..index + 3]);
            } else {
                out.push(byte);
            }
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

struct Parser<'a> {
    text: &'a str,
    rest: &'a str,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            rest: text,
            segments: Vec::new(),
            variables: Vec::new(),
        }
    }

    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, TemplateError> {
        Err(TemplateError {
            template: self.text.to_owned(),
            reason: reason.into(),
        })
    }

    fn template(mut self) -> Result<Template, TemplateError> {
        let Some(rest) = self.rest.strip_prefix('/') else {
            return self.fail("it must start with /");
        };
        self.rest = rest;
        self.segments_until(&[':'], false)?;
        let verb = match self.rest.strip_prefix(':') {
            Some(verb) => {
                if !is_literal(verb) {
                    return self.fail(format!("invalid verb {verb:?}"));
                }
                self.rest = "";
                Some(verb.to_owned())
            }
            None => None,
        };
        if !self.rest.is_empty() {
            return self.fail(format!("unexpected {:?}", self.rest));
        }
        if let Some(position) = self.segments.iter().position(|s| *s == Segment::Rest) {
            if position + 1 != self.segments.len() {
                return self.fail("** must be the last segment");
            }
        }
        let mut names: Vec<String> = self.variables.iter().map(Variable::name).collect();
        names.sort();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return self.fail("a field is bound twice");
        }
        Ok(Template {
            text: self.text.to_owned(),
            segments: self.segments,
            variables: self.variables,
            verb,
        })
    }

    /// Segments separated by `/` until one of `stops` (not consumed) or the end.
    fn segments_until(&mut self, stops: &[char], in_variable: bool) -> Result<(), TemplateError> {
        loop {
            self.segment(in_variable)?;
            match self.rest.strip_prefix('/') {
                Some(rest) => self.rest = rest,
                None => {
                    if self.rest.is_empty() || self.rest.starts_with(stops) {
                        return Ok(());
                    }
                    return self.fail(format!("unexpected {:?}", self.rest));
                }
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        if let Some(rest) = self.rest.strip_prefix("**") {
            self.rest = rest;
            self.segments.push(Segment::Rest);
        } else if let Some(rest) = self.rest.strip_prefix('*') {
            self.rest = rest;
            self.segments.push(Segment::Any);
        } else if let Some(rest) = self.rest.strip_prefix('{') {
            if in_variable {
                return self.fail("variables cannot nest");
            }
            self.rest = rest;
            self.variable()?;
        } else {
            let end = self
                .rest
                .find(['/', ':', '{', '}', '*', '='])
                .unwrap_or(self.rest.len());
            let literal = &self.rest[..end];
            if literal.is_empty() || !is_literal(literal) {
                return self.fail(format!("invalid segment at {:?}", self.rest));
            }
            self.segments.push(Segment::Literal(literal.to_owned()));
            self.rest = &self.rest[end..];
        }
        Ok(())
    }

    fn variable(&mut self) -> Result<(), TemplateError> {
        let end = self.rest.find(['=', '}']).unwrap_or(self.rest.len());
        let field_path: Vec<String> = self.rest[..end].split('.').map(str::to_owned).collect();
        if field_path.iter().any(|part| !is_ident(part)) {
            return self.fail(format!("invalid field path {:?}", &self.rest[..end]));
        }
        self.rest = &self.rest[end..];
        let start = self.segments.len();
        if let Some(rest) = self.rest.strip_prefix('=') {
            self.rest = rest;
            self.segments_until(&['}'], true)?;
        } else {
            self.segments.push(Segment::Any);
        }
        let Some(rest) = self.rest.strip_prefix('}') else {
            return self.fail("a variable is not closed with }");
        };
        self.rest = rest;
        self.variables.push(Variable {
            field_path,
            start,
            end: self.segments.len(),
        });
        Ok(())
    }
}

fn is_ident(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Unreserved characters and the sub-delimiters and escapes RFC 3986 allows
/// in a path segment (no `/`, `:` only in the verb's position).
fn is_literal(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'+'
                        | b','
                        | b';'
                        | b'@'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).unwrap().matches(path).map(|b| {
            b.into_iter()
                .map(|(field, value)| (field.join("."), value))
                .collect()
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn simple_variables_and_literals() {
        assert_eq!(
            bind("/v1/users/{user_id}", "/v1/users/u_1"),
            pairs(&[("user_id", "u_1")])
        );
        assert_eq!(
            bind("/v1/users/{user_id}/orders", "/v1/users/u%201/orders"),
            pairs(&[("user_id", "u 1")])
        );
        assert_eq!(bind("/v1/users/{user_id}", "/v1/users"), None);
        assert_eq!(bind("/v1/users/{user_id}", "/v1/users/"), None);
        assert_eq!(bind("/v1/users/{user_id}", "/v1/users/a/b"), None);
        assert_eq!(bind("/v1/users", "/v1/users"), pairs(&[]));
        assert_eq!(bind("/v1/users", "/v1/user"), None);
    }

    #[test]
    fn verbs_split_the_last_segment() {
        let cancel = "/v1/orders/{order_id}:cancel";
        assert_eq!(
            bind(cancel, "/v1/orders/ord_1:cancel"),
            pairs(&[("order_id", "ord_1")])
        );
        assert_eq!(bind(cancel, "/v1/orders/ord_1"), None);
        assert_eq!(bind(cancel, "/v1/orders/ord_1:refund"), None);
        // Without a verb in the template the colon is part of the value.
        assert_eq!(
            bind("/v1/orders/{order_id}", "/v1/orders/ord_1:cancel"),
            pairs(&[("order_id", "ord_1:cancel")])
        );
    }

    #[test]
    fn nested_fields_wildcards_and_multi_segment_variables() {
        assert_eq!(
            bind("/v1/{shelf.name=shelves/*}/books", "/v1/shelves/s1/books"),
            pairs(&[("shelf.name", "shelves/s1")])
        );
        assert_eq!(
            bind("/v1/files/{path=**}", "/v1/files/a/b%2Fc/d"),
            pairs(&[("path", "a/b%2Fc/d")])
        );
        assert_eq!(
            bind("/v1/files/{path=**}", "/v1/files/x%2Fy"),
            pairs(&[("path", "x%2Fy")])
        );
        assert_eq!(bind("/v1/*/items", "/v1/any/items"), pairs(&[]));
        assert_eq!(bind("/v1/**", "/v1/a/b/c"), pairs(&[]));
        assert_eq!(
            bind("/v1/{a.b.c}", "/v1/%E2%9C%93"),
            pairs(&[("a.b.c", "✓")])
        );
    }

    #[test]
    fn malformed_paths_do_not_match() {
        assert_eq!(bind("/v1/users/{user_id}", "/v1/users/%zz"), None);
        assert_eq!(bind("/v1/users/{user_id}", "/v1/users/%ff"), None);
        assert_eq!(bind("/v1/users/{user_id}", "v1/users/a"), None);
    }

    #[test]
    fn invalid_templates_are_refused_with_the_reason() {
        for (template, reason) in [
            ("v1/users", "must start with /"),
            ("/v1/{a", "not closed"),
            ("/v1/{a={b}}", "cannot nest"),
            ("/v1/**/x", "last segment"),
            ("/v1/{a}/{a}", "bound twice"),
            ("/v1/{1a}", "invalid field path"),
            ("/v1//x", "invalid segment"),
            ("/v1/x:", "invalid verb"),
        ] {
            let error = Template::parse(template).unwrap_err().to_string();
            assert!(error.contains(reason), "{template}: {error}");
        }
    }

    #[test]
    fn openapi_paths_name_every_variable() {
        let path = |t: &str| Template::parse(t).unwrap().openapi_path();
        assert_eq!(
            path("/v1/orders/{order_id}:cancel"),
            "/v1/orders/{order_id}:cancel"
        );
        assert_eq!(
            path("/v1/{shelf.name=shelves/*}/books"),
            "/v1/{shelf.name}/books"
        );
        assert_eq!(path("/v1/*/x/**"), "/v1/{wildcard1}/x/{wildcard2}");
        assert_eq!(
            Template::parse("/v1/*/x/**").unwrap().openapi_wildcards(),
            ["wildcard1", "wildcard2"]
        );
    }

    #[test]
    fn more_specific_templates_rank_higher() {
        let a = Template::parse("/v1/orders/{id}:cancel").unwrap();
        let b = Template::parse("/v1/orders/{id}").unwrap();
        let c = Template::parse("/v1/**").unwrap();
        assert!(a.specificity() > b.specificity());
        assert!(b.specificity() > c.specificity());
    }
}
