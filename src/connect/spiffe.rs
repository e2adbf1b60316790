//! Consul's SPIFFE service identities:
//! `spiffe://<trust domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`.

use std::fmt;

/// A Connect service identity, parsed from a certificate's URI SAN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// `<cluster uuid>.consul`.
    pub trust_domain: String,
    /// Consul namespace (`default` in Consul OSS).
    pub namespace: String,
    /// Datacenter, e.g. `dc1`.
    pub datacenter: String,
    /// Service name, e.g. `users`.
    pub service: String,
}

/// A URI that is not a Connect service identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri:?} is not a Consul service identity (spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/<service>)")]
pub struct NotAServiceIdentity {
    /// The URI as found.
    pub uri: String,
}

impl SpiffeId {
    /// The identity of `service` in the same trust domain, namespace and
    /// datacenter as `self`.
    pub fn sibling(&self, service: &str) -> SpiffeId {
        SpiffeId {
            service: service.to_owned(),
            ..self.clone()
        }
    }

    /// Parses `spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>` (nothing more, nothing less).
    pub fn parse(uri: &str) -> Result<Self, NotAServiceIdentity> {
        let fail = || NotAServiceIdentity {
            uri: uri.to_owned(),
        };
        let rest = uri.strip_prefix("spiffe://").ok_or_else(fail)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [trust_domain, "ns", namespace, "dc", datacenter, "svc", service]
                if [trust_domain, namespace, datacenter, service]
                    .iter()
                    .all(|part| !part.is_empty()) =>
            {
                Ok(SpiffeId {
                    trust_domain: trust_domain.to_ascii_lowercase(),
                    namespace: (*namespace).to_owned(),
                    datacenter: (*datacenter).to_owned(),
                    service: (*service).to_owned(),
                })
            }
            _ => Err(fail()),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/dc/{}/svc/{}",
            self.trust_domain, self.namespace, self.datacenter, self.service
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_consul_service_identities() {
        let uri = "spiffe://1111-2222.consul/ns/default/dc/dc1/svc/users";
        let id = SpiffeId::parse(uri).unwrap();
        assert_eq!(id.service, "users");
        assert_eq!(id.datacenter, "dc1");
        assert_eq!(id.to_string(), uri);
        assert_eq!(
            id.sibling("payments").to_string(),
            "spiffe://1111-2222.consul/ns/default/dc/dc1/svc/payments"
        );
    }

    #[test]
    fn refuses_other_uris() {
        for uri in [
            "https://example.com/ns/default/dc/dc1/svc/users",
            "spiffe://td.consul/ns/default/dc/dc1/svc/",
            "spiffe://td.consul/ns/default/dc/dc1/svc/users/extra",
            "spiffe://td.consul/agent/client/dc/dc1/id/123",
            "spiffe://td.consul",
        ] {
            assert!(SpiffeId::parse(uri).is_err(), "{uri} was accepted");
        }
    }
}
