//! A route's conditions, as gRPC puts a call on the wire (gRFC A28): the path
//! `/package.Service/Method`, and the metadata as HTTP/2 headers.
//!
//! - `PathExact`, `PathPrefix` (case-sensitive), `PathRegex` (the whole path);
//! - a header condition looks at every value of the header joined with `,`;
//!   `Exact`, `Prefix`, `Suffix`, `Regex` (the whole value), `Present`;
//!   `Invert` negates it. An absent header fails every condition but an
//!   inverted `Present` (Envoy's rule when Consul 1.8 shipped);
//! - a condition on a `-bin` header never matches: those values are binary
//!   (base64 on the wire) and gRPC does not match on them;
//! - regexes use the `regex` crate's RE2-like syntax and must match the whole
//!   text, as Envoy's `safe_regex` does.

use http::{header::HeaderName, HeaderMap};
use regex::Regex;

/// One condition of a route.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    /// On the path.
    Path(PathMatch),
    /// On one header.
    Header(HeaderCondition),
    /// Can never hold for a gRPC call (a `-bin` header, a query parameter, a
    /// method other than POST, an invalid regex…): the reason.
    Never(String),
}

/// A path condition.
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A prefix.
    Prefix(String),
    /// A regex over the whole path (the text as written kept for display).
    Regex(Regex, String),
}

/// A header condition.
#[derive(Debug, Clone)]
pub(crate) struct HeaderCondition {
    pub(crate) name: HeaderName,
    pub(crate) test: ValueTest,
    pub(crate) invert: bool,
}

/// What a header's value must be.
#[derive(Debug, Clone)]
pub(crate) enum ValueTest {
    Present,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex, String),
}

/// Longest piece of a config entry (a value, a pattern) quoted in a message.
const QUOTED: usize = 80;

/// `text`, cut to [`QUOTED`] characters (`…` marks the cut), for messages.
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Compiles `pattern` to match a whole text.
pub(crate) fn whole(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|error| {
        let text = error.to_string();
        let last = text.lines().last().unwrap_or_default().trim();
        format!("invalid regex {:?}: {}", clip(pattern), clip(last))
    })
}

impl Condition {
    /// Whether the call (path and headers) meets it.
    pub(crate) fn holds(&self, path: &str, headers: &HeaderMap) -> bool {
        match self {
            Condition::Path(PathMatch::Exact(exact)) => path == exact,
            Condition::Path(PathMatch::Prefix(prefix)) => path.starts_with(prefix.as_str()),
            Condition::Path(PathMatch::Regex(regex, _)) => regex.is_match(path),
            Condition::Header(header) => header.holds(headers),
            Condition::Never(_) => false,
        }
    }

    /// The condition as a person reads it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Condition::Path(PathMatch::Exact(exact)) => format!("path is {:?}", clip(exact)),
            Condition::Path(PathMatch::Prefix(prefix)) => {
                format!("path starts with {:?}", clip(prefix))
            }
            Condition::Path(PathMatch::Regex(_, text)) => format!("path matches /{}/", clip(text)),
            Condition::Header(header) => header.describe(),
            Condition::Never(reason) => reason.clone(),
        }
    }
}

impl HeaderCondition {
    fn holds(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            // Absent: only an inverted Present holds.
            return self.invert && matches!(self.test, ValueTest::Present);
        };
        let joined;
        let value = match values.next() {
            None => first.to_str().ok(),
            Some(_) => {
                let all: Option<Vec<&str>> = headers
                    .get_all(&self.name)
                    .iter()
                    .map(|value| value.to_str().ok())
                    .collect();
                joined = all.map(|all| all.join(","));
                joined.as_deref()
            }
        };
        let Some(value) = value else {
            // Not text: no value test can hold; presence still does.
            return matches!(self.test, ValueTest::Present) != self.invert;
        };
        let held = match &self.test {
            ValueTest::Present => true,
            ValueTest::Exact(exact) => value == exact,
            ValueTest::Prefix(prefix) => value.starts_with(prefix.as_str()),
            ValueTest::Suffix(suffix) => value.ends_with(suffix.as_str()),
            ValueTest::Regex(regex, _) => regex.is_match(value),
        };
        held != self.invert
    }

    fn describe(&self) -> String {
        let name = self.name.as_str();
        let test = match &self.test {
            ValueTest::Present => format!("{name} is present"),
            ValueTest::Exact(exact) => format!("{name} is {:?}", clip(exact)),
            ValueTest::Prefix(prefix) => format!("{name} starts with {:?}", clip(prefix)),
            ValueTest::Suffix(suffix) => format!("{name} ends with {:?}", clip(suffix)),
            ValueTest::Regex(_, text) => format!("{name} matches /{}/", clip(text)),
        };
        if self.invert {
            format!("not ({test})")
        } else {
            test
        }
    }
}

/// Compiles one of Consul's header conditions; `Err` when it can never match
/// a gRPC call (the reason).
pub(crate) fn header_condition(
    header: &discovery::chain::HeaderMatch,
) -> Result<HeaderCondition, String> {
    let lower = header.name.trim().to_ascii_lowercase();
    if lower.ends_with("-bin") {
        return Err(format!(
            "header {:?}: binary (-bin) metadata is never matched",
            clip(&lower)
        ));
    }
    let name = HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("header {:?}: not a valid header name", clip(&header.name)))?;
    let test = if header.present {
        ValueTest::Present
    } else if !header.exact.is_empty() {
        ValueTest::Exact(header.exact.clone())
    } else if !header.prefix.is_empty() {
        ValueTest::Prefix(header.prefix.clone())
    } else if !header.suffix.is_empty() {
        ValueTest::Suffix(header.suffix.clone())
    } else if !header.regex.is_empty() {
        ValueTest::Regex(whole(&header.regex)?, header.regex.clone())
    } else {
        // Consul requires one test; with none, Envoy checks presence.
        ValueTest::Present
    };
    Ok(HeaderCondition {
        name,
        test,
        invert: header.invert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery::chain::HeaderMatch;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn condition(header: HeaderMatch) -> Condition {
        Condition::Header(header_condition(&header).unwrap())
    }

    fn named(name: &str) -> HeaderMatch {
        HeaderMatch {
            name: name.into(),
            ..HeaderMatch::default()
        }
    }

    #[test]
    fn paths_match_exactly_by_prefix_or_by_whole_regex() {
        let get = "/mesh.inventory.v1.Inventory/GetItem";
        let none = HeaderMap::new();
        assert!(Condition::Path(PathMatch::Exact(get.into())).holds(get, &none));
        assert!(!Condition::Path(PathMatch::Exact(get.into()))
            .holds("/mesh.inventory.v1.Inventory/GetItems", &none));
        let prefix = Condition::Path(PathMatch::Prefix("/mesh.inventory.v1.Inventory/".into()));
        assert!(prefix.holds(get, &none));
        assert!(
            !prefix.holds("/mesh.INVENTORY.v1.Inventory/GetItem", &none),
            "case-sensitive"
        );
        let regex = Condition::Path(PathMatch::Regex(
            whole("/mesh\\.inventory\\.v1\\.Inventory/(Get|List).*").unwrap(),
            String::new(),
        ));
        assert!(regex.holds(get, &none));
        assert!(!regex.holds("/mesh.inventory.v1.Inventory/AddStock", &none));
        let partial = Condition::Path(PathMatch::Regex(whole("Get").unwrap(), String::new()));
        assert!(
            !partial.holds(get, &none),
            "a regex must match the whole path"
        );
    }

    #[test]
    fn header_tests_and_invert() {
        let canary = headers(&[("x-canary", "1")]);
        let exact = condition(HeaderMatch {
            exact: "1".into(),
            ..named("X-Canary")
        });
        assert!(exact.holds("/", &canary), "names are case-insensitive");
        assert!(!exact.holds("/", &headers(&[("x-canary", "10")])));
        let prefix = condition(HeaderMatch {
            prefix: "ada".into(),
            ..named("x-user")
        });
        assert!(prefix.holds("/", &headers(&[("x-user", "ada.l")])));
        let suffix = condition(HeaderMatch {
            suffix: "-eu".into(),
            ..named("x-region")
        });
        assert!(suffix.holds("/", &headers(&[("x-region", "west-eu")])));
        assert!(!suffix.holds("/", &headers(&[("x-region", "west-us")])));
        let regex = condition(HeaderMatch {
            regex: "[0-9]+".into(),
            ..named("x-build")
        });
        assert!(regex.holds("/", &headers(&[("x-build", "123")])));
        assert!(
            !regex.holds("/", &headers(&[("x-build", "12a")])),
            "whole value"
        );
        let present = condition(HeaderMatch {
            present: true,
            ..named("x-tenant")
        });
        assert!(present.holds("/", &headers(&[("x-tenant", "")])));
        assert!(!present.holds("/", &HeaderMap::new()));

        let not_ada = condition(HeaderMatch {
            prefix: "ada".into(),
            invert: true,
            ..named("x-user")
        });
        assert!(not_ada.holds("/", &headers(&[("x-user", "bob")])));
        assert!(!not_ada.holds("/", &headers(&[("x-user", "ada")])));
        assert!(
            !not_ada.holds("/", &HeaderMap::new()),
            "absent fails, inverted or not"
        );
        let absent = condition(HeaderMatch {
            present: true,
            invert: true,
            ..named("x-tenant")
        });
        assert!(absent.holds("/", &HeaderMap::new()));
        assert!(!absent.holds("/", &headers(&[("x-tenant", "t")])));
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let twice = headers(&[("x-tag", "a"), ("x-tag", "b")]);
        let exact = condition(HeaderMatch {
            exact: "a,b".into(),
            ..named("x-tag")
        });
        assert!(exact.holds("/", &twice));
        let first_only = condition(HeaderMatch {
            exact: "a".into(),
            ..named("x-tag")
        });
        assert!(!first_only.holds("/", &twice));
    }

    #[test]
    fn binary_headers_invalid_names_and_regexes_never_match() {
        let bin = header_condition(&HeaderMatch {
            present: true,
            ..named("x-trace-bin")
        });
        assert!(bin.unwrap_err().contains("-bin"));
        let bin_inverted = header_condition(&HeaderMatch {
            present: true,
            invert: true,
            ..named("X-Trace-BIN")
        });
        assert!(bin_inverted.is_err(), "not even inverted");
        assert!(header_condition(&HeaderMatch {
            present: true,
            ..named("bad name")
        })
        .is_err());
        let error = header_condition(&HeaderMatch {
            regex: "(".into(),
            ..named("x-a")
        })
        .unwrap_err();
        assert!(error.contains("invalid regex"), "{error}");
    }

    #[test]
    fn quoted_config_is_bounded() {
        let long = "x".repeat(5000);
        let error = whole(&format!("({long}")).unwrap_err();
        assert!(error.len() < 300, "{}", error.len());
        let described = condition(HeaderMatch {
            exact: long,
            ..named("x-a")
        })
        .describe();
        assert!(
            described.len() < 120 && described.ends_with("…\""),
            "{described}"
        );
        assert_eq!(clip("short"), "short");
        assert_eq!(clip(&"é".repeat(100)).chars().count(), 81);
    }

    #[test]
    fn descriptions_read_as_sentences() {
        let exact = condition(HeaderMatch {
            exact: "1".into(),
            ..named("x-canary")
        });
        assert_eq!(exact.describe(), r#"x-canary is "1""#);
        let inverted = condition(HeaderMatch {
            present: true,
            invert: true,
            ..named("x-a")
        });
        assert_eq!(inverted.describe(), "not (x-a is present)");
        assert_eq!(
            Condition::Path(PathMatch::Prefix("/".into())).describe(),
            r#"path starts with "/""#
        );
    }
}
