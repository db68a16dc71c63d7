//! Deliberate rotation of a running cluster's passwords (`pgstrap rotate passwords`), without an
//! outage. The identity guard refuses an `apply` whose passwords differ from the ones the hosts
//! run; this is the one way to change them:
//!
//! 1. the hosts are checked (the CA must be the cluster's; passwords may differ: an interrupted
//!    rotation is finished by running it again with `--keep-values`);
//! 2. new values for the chosen generated secrets are written to the secrets file first, so no
//!    password is ever set that the inventory does not hold;
//! 3. on each primary side's leader, over SSH as `postgres` (peer authentication, no password
//!    needed), each database role gets its new password as a SCRAM verifier computed here: the
//!    password itself never reaches the server. Open sessions (replication, PgBouncer's pool,
//!    applications) are not cut; a DR standby cluster receives the change by replication;
//! 4. the rollout brings every host's configuration to the new values (Patroni, PgBouncer and
//!    keepalived reloaded, on every host at once), then verifies with real clients.

use crate::clients::{patroni::Patroni, postgres, scram};
use crate::error::{Error, Result};
use crate::inventory::secrets::{self, KNOWN};
use crate::project::Project;
use crate::stack::rollout::{self, RolloutReport};

/// The secrets that are a PostgreSQL role's password, with the setting naming the role.
const DATABASE_ROLES: &[(&str, &str)] = &[
    ("superuser_password", "patroni.superuser_username"),
    ("replication_password", "patroni.replication_username"),
    ("rewind_password", "patroni.rewind_username"),
    ("pgbouncer_auth_password", "pgbouncer.auth_user"),
];

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The secrets to rotate (empty: every one the secrets file holds).
    pub names: Vec<String>,
    /// Take the values the secrets file and sources hold now (finish an interrupted rotation, or
    /// one whose new values were set at their source) instead of generating new ones.
    pub keep_values: bool,
    pub rollout: rollout::Options,
}

/// What a rotation did.
#[derive(Debug, serde::Serialize)]
pub struct RotateReport {
    pub secrets: Vec<String>,
    /// `(cluster, role)` whose password was set in PostgreSQL.
    pub roles: Vec<(String, String)>,
    pub rollout: RolloutReport,
}

pub async fn passwords(project: &Project, options: Options) -> Result<RotateReport> {
    let names = chosen(&options.names)?;
    let mut engine = options.rollout.engine.clone();
    engine.rotating_passwords = true;

    // 1. The hosts: reachable, and trusting the inventory's CA.
    let current = project.secrets(false)?;
    let missing: Vec<&str> = KNOWN
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| current.get(n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Error::usage(
            format!("the secrets file lacks {}: a rotation starts from a cluster's complete secrets", missing.join(", ")),
            Some(format!("bring the cluster's secrets file (`{}`), or roll the cluster out with `apply` first", crate::exec::identity::Store::of(project).secrets_file.display())),
        ));
    }
    let prepared = crate::exec::prepare(project, &current, &engine).await?;
    // What follows renders the roles' settings for the releases the hosts run.
    let project = &prepared.project.clone();
    if let Some((host, error)) = prepared.unreachable.first() {
        return Err(Error::failure(
            format!("{host}: {error}"),
            Some(
                "a rotation needs every host: the ones not reached would keep the old passwords"
                    .into(),
            ),
        ));
    }

    // 2. The new values, in the secrets file before anywhere else.
    if !options.keep_values {
        secrets::regenerate(
            &project.inventory.secret_sources,
            &project.inventory.secrets_store(),
            &names,
        )
        .map_err(|e| Error::usage(e.message, Some(e.hint)))?;
    }
    let new = project.secrets(false)?;

    // 3. The database roles, on each primary side's leader.
    let mut roles = Vec::new();
    let patroni = Patroni::from_secrets(&new)?;
    for cluster in project
        .inventory
        .clusters
        .values()
        .filter(|c| c.standby_of.is_none())
    {
        let wanted: Vec<(&str, String)> = DATABASE_ROLES
            .iter()
            .filter(|(secret, _)| names.iter().any(|n| n == secret))
            .filter_map(|(secret, setting)| {
                let role = project.setting(None, Some(cluster), setting)?;
                Some((*secret, role.as_str()?.to_owned()))
            })
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let leader = leader_host(project, cluster, &patroni).await?;
        let session = prepared
            .sessions
            .get(&leader)
            .ok_or_else(|| Error::failure(format!("{leader}: not connected"), None))?;
        for (secret, role) in wanted {
            let Some(value) = new.get(secret) else {
                continue;
            };
            if set_password(session, &role, value.expose()).await? {
                roles.push((cluster.name.clone(), role));
            }
        }
    }
    for (_, session) in prepared.sessions {
        session.close().await;
    }

    // 4. Every host's configuration, then verification with the new values.
    let rollout_options = rollout::Options {
        engine,
        ..options.rollout
    };
    let rollout = rollout::rollout(project, rollout_options).await?;
    Ok(RotateReport {
        secrets: names,
        roles,
        rollout,
    })
}

/// The secrets to rotate: the named ones (each must be known), or all.
fn chosen(names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(KNOWN
            .iter()
            .map(|(n, _, _)| *n)
            .filter(|n| !secrets::NOT_ROTATED.contains(n))
            .map(str::to_owned)
            .collect());
    }
    for name in names {
        if secrets::NOT_ROTATED.contains(&name.as_str()) {
            return Err(Error::usage(
                format!("--secret {name}: pgstrap does not rotate it"),
                Some("every backup and archived WAL segment is encrypted with it, and pgBackRest cannot re-key a repository: a new passphrase needs a new repository (a new stanza) and a new full backup".into()),
            ));
        }
        if !KNOWN.iter().any(|(n, _, _)| n == name) {
            return Err(Error::usage(
                format!("--secret: no secret `{name}`"),
                Some(format!(
                    "secrets are: {}",
                    KNOWN
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ));
        }
    }
    Ok(names.to_vec())
}

/// The inventory host that leads `cluster` now.
async fn leader_host(
    project: &Project,
    cluster: &crate::inventory::Cluster,
    patroni: &Patroni,
) -> Result<String> {
    let view = patroni.view(project, cluster).await.ok_or_else(|| {
        Error::failure(
            format!("cluster {}: no Patroni member answers", cluster.name),
            Some("a rotation needs the running cluster (`pgstrap status` shows it)".into()),
        )
    })?;
    let leader = view
        .leader()
        .ok_or_else(|| Error::failure(format!("cluster {}: no leader now", cluster.name), None))?;
    crate::project::names::member_hosts(project, cluster)
        .remove(&leader.name)
        .ok_or_else(|| {
            Error::failure(
                format!(
                    "cluster {}: its leader `{}` is not in the inventory",
                    cluster.name, leader.name
                ),
                None,
            )
        })
}

/// Give `role` the password `value` (as a SCRAM verifier) unless it has it already. Returns
/// whether it was set.
async fn set_password(session: &crate::connect::Session, role: &str, value: &str) -> Result<bool> {
    let probe = format!(
        "SELECT coalesce((SELECT rolpassword FROM pg_authid WHERE rolname = {}), '');\n",
        postgres::quote_literal(role)
    );
    let stored = postgres::psql(session, "postgres", &probe, "read a role's verifier").await?;
    if scram::matches(stored.trim(), value) {
        return Ok(false);
    }
    let sql = format!(
        "ALTER ROLE {} PASSWORD {};\n",
        postgres::quote_ident(role),
        postgres::quote_literal(&scram::verifier(value))
    );
    postgres::psql(
        session,
        "postgres",
        &sql,
        &format!("set the new password of {role}"),
    )
    .await?;
    Ok(true)
}
