//! What the benchmark's requests go through: the mesh client (the default),
//! `--direct ADDR` or `--proxy ADDR` (and the old spelling `--via MODE
//! [ADDR]`, hidden, kept for the commands in older notes).

use std::{fmt, time::Duration};

use anyhow::bail;
use mesh::{
    client::{connect_endpoint, direct, Channel, ClientOptions, MeshClient},
    connect::Identity,
};

/// The flags that choose the transport under test.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct ViaArgs {
    /// One plain tonic channel to this instance (`host:port`): the floor.
    #[arg(long, value_name = "ADDR", group = "via_choice")]
    direct: Option<String>,

    /// One plain tonic channel to this proxy (`host:port`, e.g. nginx
    /// `grpc_pass`), dialled in the clear.
    #[arg(long, value_name = "ADDR", group = "via_choice")]
    proxy: Option<String>,

    /// REST/JSON through the API gateway at this URL
    /// (`http://127.0.0.1:8080`): GetItem and PlaceOrder only.
    #[arg(long, value_name = "URL", group = "via_choice")]
    gateway: Option<String>,

    /// The old spelling: `mesh`, `direct ADDR`, `proxy ADDR` (or `direct=ADDR`).
    #[arg(long, hide = true, num_args = 1..=2, value_names = ["MODE", "ADDR"], group = "via_choice")]
    via: Option<Vec<String>>,
}

impl ViaArgs {
    /// The transport the flags name (the mesh client when none does).
    pub(crate) fn resolve(&self) -> anyhow::Result<Via> {
        let nonempty = |flag: &str, address: &str| {
            if address.trim().is_empty() {
                bail!("--{flag} needs an address: --{flag} 127.0.0.1:50052");
            }
            Ok(address.trim().to_owned())
        };
        if let Some(url) = &self.gateway {
            if self.direct.is_some() || self.proxy.is_some() || self.via.is_some() {
                bail!("give one of --direct ADDR, --proxy ADDR and --gateway URL, or none (the mesh client)");
            }
            let url = nonempty("gateway", url)?;
            return Ok(Via::Gateway(if url.contains("://") {
                url
            } else {
                format!("http://{url}")
            }));
        }
        match (&self.direct, &self.proxy, &self.via) {
            (Some(address), None, None) => Ok(Via::Direct(nonempty("direct", address)?)),
            (None, Some(address), None) => Ok(Via::Proxy(nonempty("proxy", address)?)),
            (None, None, Some(values)) => Via::parse(values),
            (None, None, None) => Ok(Via::Mesh),
            _ => bail!("give one of --direct ADDR, --proxy ADDR and --gateway URL, or none (the mesh client)"),
        }
    }
}

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
    /// Parses the old `--via` values: `mesh`, `direct ADDR`, `proxy ADDR`
    /// (also `direct=ADDR`).
    fn parse(values: &[String]) -> anyhow::Result<Self> {
        let words: Vec<&str> = match values {
            [single] => single.splitn(2, ['=', ' ']).collect(),
            many => many.iter().map(String::as_str).collect(),
        };
        match words.as_slice() {
            ["mesh"] => Ok(Via::Mesh),
            ["direct", address] if !address.is_empty() => Ok(Via::Direct((*address).to_owned())),
            ["proxy", address] if !address.is_empty() => Ok(Via::Proxy((*address).to_owned())),
            ["direct" | "proxy"] => bail!(
                "--via {} needs an address: --{0} 127.0.0.1:50052",
                words[0]
            ),
            _ => bail!(
                "--via takes `mesh`, `direct ADDR` or `proxy ADDR`, not {values:?} (say --direct ADDR or --proxy ADDR)"
            ),
        }
    }

    /// `mesh`, `direct` or `proxy`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Via::Mesh => "mesh",
            Via::Direct(_) => "direct",
            Via::Proxy(_) => "proxy",
            Via::Gateway(_) => "gateway",
        }
    }

    /// The address of a direct or proxy run.
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
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        via: ViaArgs,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<Via> {
        let flags = Flags::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        flags.via.resolve()
    }

    #[test]
    fn direct_and_proxy_take_one_address_each_and_the_mesh_is_the_default() {
        assert_eq!(resolve(&[]).unwrap(), Via::Mesh);
        assert_eq!(
            resolve(&["--direct", "127.0.0.1:1"]).unwrap(),
            Via::Direct("127.0.0.1:1".into())
        );
        assert_eq!(
            resolve(&["--proxy", "127.0.0.1:8080"]).unwrap().to_string(),
            "proxy 127.0.0.1:8080"
        );
        assert!(resolve(&["--direct"]).is_err());
        assert!(resolve(&["--direct", " "]).is_err());
        assert!(resolve(&["--direct", "127.0.0.1:1", "--proxy", "127.0.0.1:2"]).is_err());
    }

    #[test]
    fn the_old_via_spellings_still_parse() {
        assert_eq!(resolve(&["--via", "mesh"]).unwrap(), Via::Mesh);
        assert_eq!(
            resolve(&["--via", "direct", "127.0.0.1:1"]).unwrap(),
            Via::Direct("127.0.0.1:1".into())
        );
        assert_eq!(
            resolve(&["--via", "direct=127.0.0.1:1"]).unwrap(),
            Via::Direct("127.0.0.1:1".into())
        );
        assert_eq!(
            resolve(&["--via", "proxy", "127.0.0.1:8080"]).unwrap(),
            Via::Proxy("127.0.0.1:8080".into())
        );
        assert!(resolve(&["--via", "direct"]).is_err());
        assert!(resolve(&["--via", "carrier-pigeon"]).is_err());
        assert!(resolve(&["--via", "mesh", "x"]).is_err());
        assert!(resolve(&["--via", "mesh", "--direct", "127.0.0.1:1"]).is_err());
    }
}
