//! Creates (or brings up to date) the mesh's ACL policies and tokens in a
//! Consul with ACLs on, through calls made with a management token.
//! Idempotent: policies are found by name and their rules updated; tokens are
//! found by description. A token file that already exists supplies the
//! token's SecretID (so a restarted dev agent, or a Kubernetes Secret, keeps
//! the same token); other tokens get a fresh SecretID, written to
//! `<dir>/<name>.token` (0600).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::policies::{Policy, TokenSpec, POLICIES, TOKENS};
use crate::{secrets, ConsulCalls, Error};

/// What happened to one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// `users`, `mesh-read`…
    pub name: &'static str,
    /// Where its SecretID is.
    pub file: PathBuf,
    /// Its public AccessorID.
    pub accessor: String,
    /// `created`, `kept` or `replaced`.
    pub action: &'static str,
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

/// Where the policies' rules come from.
#[derive(Debug, Clone, Copy)]
pub enum PolicySource<'a> {
    /// The files of `deploy/consul/acl/`, compiled in.
    Shipped,
    /// `<dir>/users.hcl`, `orders.hcl`… (e.g. a mounted ConfigMap).
    Folder(&'a Path),
}

/// Policies, then tokens; the token files go to `dir`.
pub fn bootstrap(
    consul: &dyn ConsulCalls,
    dir: &Path,
    policies: PolicySource<'_>,
) -> Result<Vec<Issued>, Error> {
    let existing: Vec<PolicyEntry> = decode(
        consul.get("/v1/acl/policies").map_err(|e| {
            Error::consul(
                "cannot list the ACL policies (is the token a management token?)",
                e,
            )
        })?,
        "/v1/acl/policies",
    )?;
    for policy in POLICIES {
        let rules = match policies {
            PolicySource::Folder(folder) => {
                let path = folder.join(policy.file);
                std::fs::read_to_string(&path)
                    .map_err(|e| Error::io("cannot read the policy", path, e))?
            }
            PolicySource::Shipped => policy.rules.to_owned(),
        };
        upsert_policy(consul, &policy, &rules, &existing)?;
    }
    let tokens: Vec<TokenEntry> = decode(
        consul
            .get("/v1/acl/tokens")
            .map_err(|e| Error::consul("cannot list the ACL tokens", e))?,
        "/v1/acl/tokens",
    )?;
    TOKENS
        .iter()
        .map(|spec| upsert_token(consul, spec, &tokens, dir))
        .collect()
}

fn decode<T: for<'de> Deserialize<'de>>(value: Value, path: &str) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| {
        Error::consul(
            format!("unexpected answer to {path}"),
            crate::CallError::new(e),
        )
    })
}

fn upsert_policy(
    consul: &dyn ConsulCalls,
    policy: &Policy,
    rules: &str,
    existing: &[PolicyEntry],
) -> Result<(), Error> {
    let body = json!({
        "Name": policy.name,
        "Description": policy.description,
        "Rules": rules,
    });
    let path = match existing.iter().find(|entry| entry.name == policy.name) {
        Some(entry) => format!("/v1/acl/policy/{}", entry.id),
        None => "/v1/acl/policy".to_owned(),
    };
    consul
        .put(&path, &body)
        .map_err(|e| Error::consul(format!("cannot write the ACL policy {}", policy.name), e))?;
    Ok(())
}

fn upsert_token(
    consul: &dyn ConsulCalls,
    spec: &TokenSpec,
    existing: &[TokenEntry],
    dir: &Path,
) -> Result<Issued, Error> {
    let file = secrets::token_path(dir, spec.name);
    let wanted = secrets::read(&file)?;
    if let Some(secret) = &wanted {
        if uuid::Uuid::parse_str(secret).is_err() {
            return Err(Error::BadToken { path: file });
        }
    }
    let description = spec.description();
    let body = json!({"Description": description, "Policies": [{"Name": spec.policy}]});
    let mut action = "created";
    for entry in existing
        .iter()
        .filter(|entry| entry.description == description)
    {
        let token: Token = decode(
            consul
                .get(&format!("/v1/acl/token/{}", entry.accessor_id))
                .map_err(|e| Error::consul(format!("cannot read the {} token", spec.name), e))?,
            "/v1/acl/token",
        )?;
        if wanted.is_none() || wanted.as_deref() == Some(token.secret_id.as_str()) {
            // Bring its policy up to date, keep its secret.
            consul
                .put(&format!("/v1/acl/token/{}", token.accessor_id), &body)
                .map_err(|e| Error::consul(format!("cannot update the {} token", spec.name), e))?;
            secrets::write(&file, &token.secret_id)?;
            return Ok(Issued {
                name: spec.name,
                file,
                accessor: token.accessor_id,
                action: "kept",
            });
        }
        // The file names another secret: it wins, this one goes.
        consul
            .delete(&format!("/v1/acl/token/{}", token.accessor_id))
            .map_err(|e| Error::consul(format!("cannot delete the old {} token", spec.name), e))?;
        action = "replaced";
    }
    let mut body = body;
    if let Some(secret) = &wanted {
        body["SecretID"] = json!(secret);
    }
    let token: Token = decode(
        consul
            .put("/v1/acl/token", &body)
            .map_err(|e| Error::consul(format!("cannot create the {} token", spec.name), e))?,
        "/v1/acl/token",
    )?;
    secrets::write(&file, &token.secret_id)?;
    Ok(Issued {
        name: spec.name,
        file,
        accessor: token.accessor_id,
        action,
    })
}
