//! The environment variables Consul's own CLI reads for its HTTP client,
//! each named once: [`ConsulSettings`](crate::ConsulSettings) reads them
//! (`from_env`) and writes them for a child process (`environment`), and
//! every binary's `--consul-*` flags fall back to them.

/// The agent's address: `host:port`, `http://…` or `https://…`.
pub const HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";
/// HTTPS when the address names no scheme.
pub const HTTP_SSL: &str = "CONSUL_HTTP_SSL";
/// `false` accepts any agent certificate.
pub const HTTP_SSL_VERIFY: &str = "CONSUL_HTTP_SSL_VERIFY";
/// A PEM file of the CA(s) that signed the agent's certificate.
pub const CACERT: &str = "CONSUL_CACERT";
/// A folder of PEM files of CAs.
pub const CAPATH: &str = "CONSUL_CAPATH";
/// The client certificate shown to an agent that verifies incoming connections.
pub const CLIENT_CERT: &str = "CONSUL_CLIENT_CERT";
/// The private key of [`CLIENT_CERT`].
pub const CLIENT_KEY: &str = "CONSUL_CLIENT_KEY";
/// The name the agent's certificate must carry.
pub const TLS_SERVER_NAME: &str = "CONSUL_TLS_SERVER_NAME";
/// The ACL token.
pub const HTTP_TOKEN: &str = "CONSUL_HTTP_TOKEN";
/// A file holding the ACL token.
pub const HTTP_TOKEN_FILE: &str = "CONSUL_HTTP_TOKEN_FILE";

/// All of them.
pub const ALL: [&str; 10] = [
    HTTP_ADDR,
    HTTP_SSL,
    HTTP_SSL_VERIFY,
    CACERT,
    CAPATH,
    CLIENT_CERT,
    CLIENT_KEY,
    TLS_SERVER_NAME,
    HTTP_TOKEN,
    HTTP_TOKEN_FILE,
];
