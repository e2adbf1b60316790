//! The curl commands `mesh up` prints for the API gateway: sign up, read an
//! item, then, as the demo user with a token from `mesh token`, place an
//! order, list the user's orders and cancel the order. Pasted in one shell
//! they work verbatim (`cli/tests/secure.rs` runs them).

use std::fmt::Write as _;

/// What the commands need to know.
#[derive(Debug)]
pub(crate) struct FrontDoor<'a> {
    /// `host:port` of the gateway.
    pub(crate) address: String,
    /// The demo user's id (the token's subject), or a placeholder.
    pub(crate) user_id: &'a str,
    /// A SKU in stock.
    pub(crate) sku: &'a str,
    /// How to run `mesh` from here (`mesh`, or this executable's path).
    pub(crate) mesh: &'a str,
    /// `--state-dir` for `mesh token`, when not the default `.mesh`.
    pub(crate) state_dir: Option<String>,
    /// A fresh id for the sign-up's e-mail address and the order's request id.
    pub(crate) nonce: String,
    /// A token for the demo user, for the shop page's link (in the URL's
    /// fragment, which a browser never sends to a server).
    pub(crate) page_token: Option<String>,
    /// The SKUs the shop page lists.
    pub(crate) skus: Vec<&'a str>,
}

/// How long the shop page's link signs the demo user in.
pub(crate) const PAGE_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

impl FrontDoor<'_> {
    /// The commands, one per line, indented like the banner's others.
    pub(crate) fn render(&self) -> String {
        let base = format!("http://{}", self.address);
        let (user, sku, nonce) = (self.user_id, self.sku, &self.nonce);
        let json = "-H 'Content-Type: application/json'";
        let bearer = "-H \"Authorization: Bearer $TOKEN\"";
        let state_dir = self
            .state_dir
            .as_ref()
            .map(|dir| format!(" --state-dir {dir}"))
            .unwrap_or_default();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "The front door: the API gateway at {base}/ (the shop page in a browser; REST/JSON,\n\
             gRPC-Web and gRPC; the API in {base}/openapi.json). Paste these in one shell:"
        );
        let lines = [
            format!(
                "curl -sS -X POST {base}/v1/users {json} -d '{{\"email\":\"shopper-{nonce}@example.com\",\"displayName\":\"Shopper\"}}'; echo"
            ),
            format!("curl -sS {base}/v1/items/{sku}; echo"),
            format!("TOKEN=$({} token {user}{state_dir})", self.mesh),
            format!(
                "ORDER=$(curl -sS -X POST {base}/v1/orders {bearer} {json} -d '{{\"requestId\":\"{nonce}\",\"userId\":\"{user}\",\"items\":[{{\"sku\":\"{sku}\",\"quantity\":1}}]}}' | sed -n 's/.*\"orderId\":\"\\([^\"]*\\)\".*/\\1/p'); echo \"order $ORDER\""
            ),
            format!("curl -sS {base}/v1/users/{user}/orders {bearer}; echo"),
            format!("curl -sS -X POST \"{base}/v1/orders/$ORDER:cancel\" {bearer} {json} -d '{{}}'; echo"),
        ];
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(
            out,
            "  (without a token: 401; with another user's token: 403)"
        );
        if let Some(token) = &self.page_token {
            let _ = writeln!(
                out,
                "The shop page as the demo user (signed in for {} h):\n  {base}/#token={token}&skus={}",
                PAGE_TOKEN_TTL.as_secs() / 3600,
                self.skus.join(",")
            );
        }
        let _ = writeln!(out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_name_the_gateway_the_user_and_the_token_command() {
        let text = FrontDoor {
            address: "127.0.0.1:8080".into(),
            user_id: "u-1",
            sku: "WIDGET-1",
            mesh: "mesh",
            state_dir: Some("/tmp/state".into()),
            nonce: "n1".into(),
            page_token: Some("t.o.k".into()),
            skus: vec!["WIDGET-1", "GADGET-2"],
        }
        .render();
        assert!(
            text.contains("http://127.0.0.1:8080/#token=t.o.k&skus=WIDGET-1,GADGET-2"),
            "{text}"
        );
        assert!(
            text.contains("TOKEN=$(mesh token u-1 --state-dir /tmp/state)"),
            "{text}"
        );
        assert!(
            text.contains("curl -sS http://127.0.0.1:8080/v1/items/WIDGET-1"),
            "{text}"
        );
        assert!(
            text.contains("/v1/users/u-1/orders -H \"Authorization: Bearer $TOKEN\""),
            "{text}"
        );
        assert!(
            text.contains("\"http://127.0.0.1:8080/v1/orders/$ORDER:cancel\""),
            "{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.trim_start().starts_with("curl "))
                .count(),
            4
        );
    }
}
