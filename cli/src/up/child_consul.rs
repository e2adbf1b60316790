//! What each instance is told about Consul, through its environment only
//! (never its command line, which any user can read): the address and TLS
//! settings, and its token — its own token file from an agent `mesh up`
//! started, else the token (file) `mesh up` was given.

use std::path::PathBuf;

use discovery::ConsulSettings;
use tokio::process::Command;

use localenv::secrets;

/// The Consul settings handed to every instance (`Debug` redacts the token).
#[derive(Debug, Clone)]
pub(crate) struct ChildConsul {
    /// Address (with its scheme), TLS and token settings.
    pub(crate) settings: ConsulSettings,
    /// From an agent with ACLs that `mesh up` started: the folder of
    /// `<service>.token`, one per service, used instead of `settings`' token.
    pub(crate) per_service_tokens: Option<PathBuf>,
}

impl ChildConsul {
    /// Sets the environment of `command`, an instance of `service`.
    pub(crate) fn apply(&self, command: &mut Command, service: &str) {
        // Exactly the variables set here, nothing inherited.
        for variable in discovery::CONSUL_ENVIRONMENT {
            command.env_remove(variable);
        }
        let mut settings = self.settings.clone();
        if let Some(dir) = &self.per_service_tokens {
            settings.token = None;
            settings.token_file = Some(secrets::token_path(dir, service));
        }
        command.envs(settings.environment());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(command: &Command) -> Vec<(String, Option<String>)> {
        command
            .as_std()
            .get_envs()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.map(|value| value.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn secure_instances_get_their_own_token_file_and_nothing_inherited() {
        let child = ChildConsul {
            settings: ConsulSettings {
                address: Some("https://127.0.0.1:8501".into()),
                ca_file: Some("/state/consul/tls/ca.pem".into()),
                token: Some("must-not-leak".into()),
                ..ConsulSettings::default()
            },
            per_service_tokens: Some("/state/secrets".into()),
        };
        let mut command = Command::new("true");
        child.apply(&mut command, "orders");
        let env = environment(&command);
        let get = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.clone())
        };
        assert_eq!(
            get("CONSUL_HTTP_ADDR").as_deref(),
            Some("https://127.0.0.1:8501")
        );
        assert_eq!(
            get("CONSUL_CACERT").as_deref(),
            Some("/state/consul/tls/ca.pem")
        );
        assert_eq!(
            get("CONSUL_HTTP_TOKEN_FILE").as_deref(),
            Some("/state/secrets/orders.token")
        );
        assert_eq!(get("CONSUL_HTTP_TOKEN"), None, "removed, not inherited");
        assert!(env
            .iter()
            .any(|(key, value)| key == "CONSUL_HTTP_TOKEN" && value.is_none()));
        assert!(!format!("{child:?}").contains("must-not-leak"));
        assert!(command
            .as_std()
            .get_args()
            .all(|arg| arg != "must-not-leak"));
    }
}
