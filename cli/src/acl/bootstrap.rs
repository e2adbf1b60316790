//! Creates (or brings up to date) the mesh's ACL policies and tokens in a
//! Consul with ACLs on, using a management token. Idempotent: policies are
//! found by name and their rules updated; tokens are found by description.
//! A token file that already exists supplies the token's SecretID (so a
//! restarted dev agent, or a Kubernetes Secret, keeps the same token); other
//! tokens get a fresh SecretID, written to `<dir>/<name>.token` (0600).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::json;

use super::{
    policies::{Policy, TokenSpec, POLICIES, TOKENS},
    secrets,
};
use crate::consul::ConsulApi;

/// What happened to one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    /// `users`, `mesh-read`…
    pub(crate) name: &'static str,
    /// Where its SecretID is.
    pub(crate) file: PathBuf,
    /// Its public AccessorID.
    pub(crate) accessor: String,
    /// `created`, `kept`, `replaced`.
    pub(crate) action: &'static str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyEntry {
    #[serde(rename = "ID")]
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TokenEntry {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Token {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID")]
    secret_id: String,
}

/// Policies (the compiled-in ones, or their files in `policies_dir`), then
/// tokens; the token files go to `dir`.
pub(crate) async fn bootstrap(
    api: &ConsulApi,
    dir: &Path,
    policies_dir: Option<&Path>,
) -> anyhow::Result<Vec<Issued>> {
    let existing: Vec<PolicyEntry> = api
        .get_json("/v1/acl/policies")
        .await
        .context("cannot list the ACL policies (is the token a management token?)")?;
    for policy in POLICIES {
        let rules = match policies_dir {
            Some(folder) => {
                let path = folder.join(policy.file);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the policy {}", path.display()))?
            }
            None => policy.rules.to_owned(),
        };
        upsert_policy(api, &policy, &rules, &existing).await?;
    }
    let tokens: Vec<TokenEntry> = api
        .get_json("/v1/acl/tokens")
        .await
        .context("cannot list the ACL tokens")?;
    let mut issued = Vec::new();
    for spec in TOKENS {
        issued.push(upsert_token(api, &spec, &tokens, dir).await?);
    }
    Ok(issued)
}

async fn upsert_policy(
    api: &ConsulApi,
    policy: &Policy,
    rules: &str,
    existing: &[PolicyEntry],
) -> anyhow::Result<()> {
    let body = json!({
        "Name": policy.name,
        "Description": policy.description,
        "Rules": rules,
    });
    let path = match existing.iter().find(|entry| entry.name == policy.name) {
        Some(entry) => format!("/v1/acl/policy/{}", entry.id),
        None => "/v1/acl/policy".to_owned(),
    };
    let _: serde_json::Value = api
        .put_json(&path, &body)
        .await
        .with_context(|| format!("cannot write the ACL policy {}", policy.name))?;
    Ok(())
}

async fn upsert_token(
    api: &ConsulApi,
    spec: &TokenSpec,
    existing: &[TokenEntry],
    dir: &Path,
) -> anyhow::Result<Issued> {
    let file = secrets::token_path(dir, spec.name);
    let wanted = secrets::read(&file)?;
    if let Some(secret) = &wanted {
        if uuid::Uuid::parse_str(secret).is_err() {
            bail!(
                "{} does not hold a UUID: Consul token SecretIDs are UUIDs (delete the file to get a new token)",
                file.display()
            );
        }
    }
    let description = spec.description();
    let mut action = "created";
    for entry in existing
        .iter()
        .filter(|entry| entry.description == description)
    {
        let token: Token = api
            .get_json(&format!("/v1/acl/token/{}", entry.accessor_id))
            .await
            .with_context(|| format!("cannot read the {} token", spec.name))?;
        if wanted.is_none() || wanted.as_deref() == Some(token.secret_id.as_str()) {
            // Bring its policy up to date, keep its secret.
            let _: serde_json::Value = api
                .put_json(
                    &format!("/v1/acl/token/{}", token.accessor_id),
                    &json!({"Description": description, "Policies": [{"Name": spec.policy}]}),
                )
                .await
                .with_context(|| format!("cannot update the {} token", spec.name))?;
            secrets::write(&file, &token.secret_id)?;
            return Ok(Issued {
                name: spec.name,
                file,
                accessor: token.accessor_id,
                action: "kept",
            });
        }
        // The file names another secret: it wins, this one goes.
        api.delete(&format!("/v1/acl/token/{}", token.accessor_id))
            .await
            .with_context(|| format!("cannot delete the old {} token", spec.name))?;
        action = "replaced";
    }
    let mut body = json!({"Description": description, "Policies": [{"Name": spec.policy}]});
    if let Some(secret) = &wanted {
        body["SecretID"] = json!(secret);
    }
    let token: Token = api
        .put_json("/v1/acl/token", &body)
        .await
        .with_context(|| format!("cannot create the {} token", spec.name))?;
    secrets::write(&file, &token.secret_id)?;
    Ok(Issued {
        name: spec.name,
        file,
        accessor: token.accessor_id,
        action,
    })
}
