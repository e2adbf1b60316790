//! `--via`: what the benchmark's requests go through.

use std::{fmt, time::Duration};

use anyhow::bail;
use mesh::{
    client::{connect_endpoint, direct, Channel, ClientOptions, MeshClient},
    connect::Identity,
};

/// The transport under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    /// The mesh client: Consul-resolved, p2c/PeakEWMA-balanced, retrying.
    Mesh,
    /// One plain tonic channel to one instance: the baseline.
    Direct(String),
    /// One plain tonic channel to a proxy (e.g. nginx `grpc_pass`).
    Proxy(String),
    /// REST/JSON through the API gateway at this base URL.
    Gateway(String),
}

impl Via {
    /// Parses `--via`'s values: `mesh`, `direct ADDR`, `proxy ADDR` (also
    /// `direct=ADDR`).
    pub(crate) fn parse(values: &[String]) -> anyhow::Result<Self> {
        let words: Vec<&str> = match values {
            [single] => single.splitn(2, ['=', ' ']).collect(),
            many => many.iter().map(String::as_str).collect(),
        };
        match words.as_slice() {
            ["mesh"] => Ok(Via::Mesh),
            ["direct", address] if !address.is_empty() => Ok(Via::Direct((*address).to_owned())),
            ["proxy", address] if !address.is_empty() => Ok(Via::Proxy((*address).to_owned())),
            ["gateway", url] if !url.is_empty() => {
                let url = if url.contains("://") {
                    (*url).to_owned()
                } else {
                    format!("http://{url}")
                };
                Ok(Via::Gateway(url))
            }
            ["direct" | "proxy"] => bail!(
                "--via {} needs an address: --via {0} 127.0.0.1:50052",
                words[0]
            ),
            ["gateway"] => {
                bail!("--via gateway needs its URL: --via gateway http://127.0.0.1:8080")
            }
            _ => bail!(
                "--via takes `mesh`, `direct ADDR`, `proxy ADDR` or `gateway URL`, not {values:?}"
            ),
        }
    }

    /// `mesh`, `direct`, `proxy` or `gateway`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Via::Mesh => "mesh",
            Via::Direct(_) => "direct",
            Via::Proxy(_) => "proxy",
            Via::Gateway(_) => "gateway",
        }
    }

    /// The address of a direct, proxy or gateway run.
    pub(crate) fn address(&self) -> Option<&str> {
        match self {
            Via::Mesh => None,
            Via::Direct(address) | Via::Proxy(address) | Via::Gateway(address) => Some(address),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address() {
            Some(address) => write!(f, "{} {address}", self.label()),
            None => f.write_str(self.label()),
        }
    }
}

/// One tonic channel to `address` (`host:port`, or `http://host:port`) serving
/// `service`: Connect mTLS with `identity`, plaintext without. Connected now,
/// so a wrong address fails before the run, not as thousands of errors.
pub(crate) async fn direct_channel(
    address: &str,
    service: &str,
    identity: Option<&Identity>,
) -> anyhow::Result<Channel> {
    let authority = address.strip_prefix("http://").unwrap_or(address);
    let options = ClientOptions {
        identity: identity.cloned(),
        connect_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let channel = connect_endpoint(authority, service, &options)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot connect to {address}: {}",
                discovery::error_chain(&error)
            )
        })?;
    Ok(direct(channel))
}

/// A mesh client resolving through `consul`, presenting `identity` (mTLS) or none (plaintext).
pub(crate) fn mesh_client(
    consul: discovery::ConsulConfig,
    identity: Option<Identity>,
) -> MeshClient {
    MeshClient::new(
        consul,
        ClientOptions {
            identity,
            ..ClientOptions::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> anyhow::Result<Via> {
        Via::parse(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse(&["mesh"]).unwrap(), Via::Mesh);
        assert_eq!(
            parse(&["direct", "127.0.0.1:1"]).unwrap(),
            Via::Direct("127.0.0.1:1".into())
        );
        assert_eq!(
            parse(&["direct=127.0.0.1:1"]).unwrap(),
            Via::Direct("127.0.0.1:1".into())
        );
        assert_eq!(
            parse(&["proxy", "127.0.0.1:8080"]).unwrap().to_string(),
            "proxy 127.0.0.1:8080"
        );
        assert_eq!(
            parse(&["gateway", "127.0.0.1:8080"]).unwrap(),
            Via::Gateway("http://127.0.0.1:8080".into())
        );
        assert!(parse(&["direct"]).is_err());
        assert!(parse(&["gateway"]).is_err());
        assert!(parse(&["carrier-pigeon"]).is_err());
        assert!(parse(&["mesh", "x"]).is_err());
    }
}
