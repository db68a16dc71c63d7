//! Backups with pgBackRest (`backup: {repository: [host]}`): the stanza and the first full backup
//! (by `apply`, once the cluster runs with its WAL archive), backups on demand (`pgstrap
//! backup`), and what the repository holds (`status`, `verify`). Every pgBackRest command runs on
//! the repository host as `postgres`; the repository reaches the DB hosts through pgBackRest's TLS
//! server (the roles `pgbackrest` and `backup` configure both sides).

pub mod info;
pub mod restore;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::Cluster;
use crate::render::Project;
pub use info::{BackupSet, StanzaInfo};

/// The kinds of backup pgBackRest takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

/// A backup that was taken.
#[derive(Debug, Clone, Serialize)]
pub struct Taken {
    pub cluster: String,
    pub repository: String,
    pub backup: BackupSet,
    pub seconds: f64,
}

/// `pgbackrest ARGS…` as `postgres` on the repository host, for `what` (said in errors).
pub(crate) fn pgbackrest(stanza: &str, args: &[&str], what: &str) -> RemoteCommand {
    let mut argv = vec![
        "runuser".to_owned(),
        "-u".into(),
        "postgres".into(),
        "--".into(),
        "pgbackrest".into(),
        format!("--stanza={stanza}"),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let command = RemoteCommand::new(&argv);
    RemoteCommand {
        display: format!("pgbackrest --stanza={stanza} {}  # {what}", args.join(" ")),
        ..command
    }
}

/// Run a pgBackRest command on the repository host; a failure carries its stderr and a hint.
pub(crate) async fn run(session: &Session, command: &RemoteCommand, hint: &str) -> Result<String> {
    let output = session
        .output(command)
        .await
        .map_err(|e| Error::failure(e.to_string(), None))?;
    if output.success() {
        return Ok(output.stdout_text());
    }
    let error = session.failure(command, &output);
    Err(Error::failure(error.to_string(), Some(hint.to_owned())))
}

/// What the repository holds for the cluster's stanza.
pub async fn info(session: &Session, cluster: &Cluster) -> Result<StanzaInfo> {
    let text = run(
        session,
        &pgbackrest(
            &cluster.name,
            &["--output=json", "info"],
            "what the repository holds",
        ),
        "check `systemctl status pgbackrest` and /var/log/pgbackrest on the repository host",
    )
    .await?;
    info::parse(&text, &cluster.name)
}

/// Bring a running cluster's backups to the inventory: the stanza created, checked (a WAL segment
/// goes through the archive), and a first full backup when the repository holds none. Each thing
/// done is returned as a line; nothing when everything is there (a second apply does nothing).
/// `archiving` is whether the primary runs with `archive_mode = on` (it waits for a restart when
/// backups were added to a running cluster; then nothing is done yet).
pub async fn converge(
    cluster: &Cluster,
    open: &BTreeMap<String, Session>,
    archiving: bool,
) -> Result<Vec<String>> {
    let Some(repository) = cluster.repository() else {
        return Ok(Vec::new());
    };
    if cluster.standby_of.is_some() || !archiving {
        return Ok(Vec::new());
    }
    let session = open.get(repository).ok_or_else(|| {
        Error::failure(
            format!("no connection to the backup repository {repository}"),
            None,
        )
    })?;
    let mut done = Vec::new();
    let hint = "the repository reaches every DB host through pgBackRest's TLS server: check `systemctl status pgbackrest` on each, and /var/log/pgbackrest/ on the repository host";
    let mut state = info(session, cluster).await?;
    if !state.exists() {
        run(
            session,
            &pgbackrest(&cluster.name, &["stanza-create"], "create the stanza"),
            hint,
        )
        .await?;
        // A WAL segment through archive_command into the repository, end to end.
        run(
            session,
            &pgbackrest(&cluster.name, &["check"], "check the WAL archive"),
            hint,
        )
        .await?;
        done.push(format!(
            "created the pgBackRest stanza {} on {repository} (WAL archive checked)",
            cluster.name
        ));
        state = info(session, cluster).await?;
    }
    if state.backups.is_empty() {
        let taken = take(session, cluster, repository, BackupType::Full).await?;
        done.push(format!(
            "took the first full backup {} ({}, {:.1} s)",
            taken.backup.label,
            info::human_bytes(taken.backup.repo_size),
            taken.seconds
        ));
    }
    Ok(done)
}

/// Take one backup now, on the repository host, and return it as the repository lists it.
async fn take(
    session: &Session,
    cluster: &Cluster,
    repository: &str,
    kind: BackupType,
) -> Result<Taken> {
    let started = Instant::now();
    let type_arg = format!("--type={}", kind.as_str());
    run(
        session,
        &pgbackrest(&cluster.name, &[&type_arg, "backup"], "take a backup"),
        "see /var/log/pgbackrest/ on the repository host; `pgbackrest --stanza=NAME check` there tells whether the archive works",
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let state = info(session, cluster).await?;
    let backup = state.backups.last().cloned().ok_or_else(|| {
        Error::failure(
            format!(
                "pgBackRest reported no backup of {} after taking one",
                cluster.name
            ),
            None,
        )
    })?;
    Ok(Taken {
        cluster: cluster.name.clone(),
        repository: repository.to_owned(),
        backup,
        seconds,
    })
}

/// `pgstrap backup`: one backup of `cluster` now.
pub async fn backup_now(
    project: &Project,
    secrets: &crate::inventory::secrets::Secrets,
    cluster: &Cluster,
    kind: BackupType,
) -> Result<Taken> {
    let repository = repository_of(cluster)?;
    let session = super::connect_host(project, repository, secrets).await?;
    let state = info(&session, cluster).await;
    let result = match state {
        Ok(state) if !state.exists() => Err(Error::failure(
            format!(
                "the repository on {repository} has no stanza {} yet",
                cluster.name
            ),
            Some(
                "run `pgstrap apply` first: it creates the stanza and takes the first full backup"
                    .into(),
            ),
        )),
        Ok(_) => take(&session, cluster, repository, kind).await,
        Err(e) => Err(e),
    };
    session.close().await;
    result
}

/// The repository host of a cluster with backups; bad input for one without.
pub fn repository_of(cluster: &Cluster) -> Result<&str> {
    cluster.repository().ok_or_else(|| {
        Error::usage(
            format!("cluster `{}` has no backups configured", cluster.name),
            Some("add `backup: {repository: [HOST]}` to the cluster in the inventory, then `pgstrap apply`".into()),
        )
    })
}
