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
use crate::project::Project;
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
        let taken = take(
            session,
            cluster,
            repository,
            BackupType::Full,
            From::Configured,
        )
        .await?;
        done.push(format!(
            "took the first full backup {} ({}, {:.1} s)",
            taken.backup.label,
            info::human_bytes(taken.backup.repo_size),
            taken.seconds
        ));
    }
    Ok(done)
}

/// Where a backup's files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum From {
    /// As configured (`backup_standby`: from a replica when the cluster has one).
    Configured,
    /// From the primary, whatever is configured (a cluster whose replicas do not run yet).
    Primary,
}

/// Take one backup now, on the repository host, and return it as the repository lists it.
pub(crate) async fn take(
    session: &Session,
    cluster: &Cluster,
    repository: &str,
    kind: BackupType,
    from: From,
) -> Result<Taken> {
    let started = Instant::now();
    let type_arg = format!("--type={}", kind.as_str());
    let mut args = vec![type_arg.as_str()];
    if from == From::Primary {
        args.push("--backup-standby=n");
    }
    args.push("backup");
    run(
        session,
        &pgbackrest(&cluster.name, &args, "take a backup"),
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
    let session = crate::exec::connect(project, repository, secrets).await?;
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
        Ok(_) => take(&session, cluster, repository, kind, From::Configured).await,
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

/// What `status` shows of a cluster's backups: the newest backup of each type, the primary's
/// WAL archiver, and whether the repository answered.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    pub repository: String,
    /// Why the repository could not be read (`None`: it answered).
    pub error: Option<String>,
    pub stanza: Option<StanzaInfo>,
    pub archiver: Option<Archiver>,
}

/// The primary's `pg_stat_archiver`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Archiver {
    pub archived_count: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    /// The last attempt failed (a failure newer than the last success).
    pub failing: bool,
    /// The primary's `archive_mode` (`on` once the restart that backups need has happened).
    pub archive_mode: String,
}

impl BackupStatus {
    /// In a few words: the newest backup and the last archived segment.
    pub fn summary(&self) -> String {
        let newest = self
            .stanza
            .as_ref()
            .and_then(|s| s.backups.last())
            .map_or_else(
                || "no backup yet".to_owned(),
                |b| format!("newest {} backup {}", b.kind, b.label),
            );
        let archived = match &self.archiver {
            Some(a) if a.archive_mode != "on" => "archive_mode waits for a restart".to_owned(),
            Some(a) => format!(
                "WAL archived to {}",
                a.last_archived_wal.as_deref().unwrap_or("nothing yet")
            ),
            None => "the primary's archiver not read".to_owned(),
        };
        format!("repository {}: {newest}, {archived}", self.repository)
    }

    /// What is wrong with the cluster's backups (empty: nothing).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(error) = &self.error {
            problems.push(format!("backup repository {}: {error}", self.repository));
        }
        // Backups added to a running cluster wait for the restart archive_mode needs: the
        // stanza comes with the `apply` after it.
        let archiving = self
            .archiver
            .as_ref()
            .is_none_or(|a| a.archive_mode == "on");
        match &self.stanza {
            Some(_) if !archiving => {}
            Some(stanza) if !stanza.exists() => problems.push(format!(
                "backup repository {}: {} ({})",
                self.repository, stanza.message, stanza.code
            )),
            Some(stanza) if stanza.backups.is_empty() => {
                problems.push("no backup in the repository yet".into())
            }
            _ => {}
        }
        if let Some(archiver) = self.archiver.as_ref().filter(|a| a.failing) {
            problems.push(format!(
                "WAL archiving fails (last failed {} at {})",
                archiver.last_failed_wal.as_deref().unwrap_or("?"),
                archiver.last_failed_time.as_deref().unwrap_or("?")
            ));
        }
        problems
    }
}

/// The backups of `cluster` as `status` shows them; `leader` is the primary's address, asked
/// through PgBouncer on `bouncer_port` for its archiver.
pub async fn status(
    project: &Project,
    secrets: &crate::inventory::secrets::Secrets,
    cluster: &Cluster,
    leader: Option<&str>,
    bouncer_port: u16,
) -> Option<BackupStatus> {
    let repository = cluster.repository()?;
    let (stanza, error) = match crate::exec::connect(project, repository, secrets).await {
        Ok(session) => {
            let state = info(&session, cluster).await;
            session.close().await;
            match state {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let archiver = match leader {
        Some(address) => archiver(address, bouncer_port, secrets).await.ok(),
        None => None,
    };
    Some(BackupStatus {
        repository: repository.to_owned(),
        error,
        stanza,
        archiver,
    })
}

async fn archiver(
    address: &str,
    port: u16,
    secrets: &crate::inventory::secrets::Secrets,
) -> std::result::Result<Archiver, String> {
    let client = super::verify::connect(address, port, secrets).await?;
    let rows = super::verify::rows(
        &client,
        "SELECT archived_count, coalesce(last_archived_wal, ''), coalesce(last_archived_time::text, ''), \
         failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''), \
         coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false), \
         current_setting('archive_mode') FROM pg_stat_archiver",
    )
    .await?;
    let row = rows.first().ok_or("pg_stat_archiver has no row")?;
    let text = |i: usize| row.get(i).filter(|v| !v.is_empty()).cloned();
    let number = |i: usize| row.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Archiver {
        archived_count: number(0),
        last_archived_wal: text(1),
        last_archived_time: text(2),
        failed_count: number(3),
        last_failed_wal: text(4),
        last_failed_time: text(5),
        failing: row.get(6).is_some_and(|v| v == "t"),
        archive_mode: row.get(7).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use crate::state::HostState;

    /// The desired state of a cluster with backups (repository on a balancer) and a restore
    /// target, rendered like `check` (secrets and CA made up in a temporary directory).
    fn rendered() -> (tempfile::TempDir, Vec<HostState>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(
            &path,
            "hosts:\n  pg1: {address: 10.0.0.11}\n  pg2: {address: 10.0.0.12}\n  pg3: {address: 10.0.0.13}\n  lb1: {address: 10.0.0.21}\n  pg4: {address: 10.0.0.14}\n\
             clusters:\n  main:\n    etcd: [pg1, pg2, pg3]\n    postgres: [pg1, pg2, pg3]\n    balancers: [lb1]\n    vip: 10.0.0.100/24\n    backup: {repository: [lb1], schedule: {incr: \"*-*-* 00/6:00\"}}\n\
             \x20 scratch:\n    etcd: [pg4]\n    postgres: [pg4]\n    restore_of: main\n",
        )
        .unwrap();
        let project = crate::project::load(&path, &[]).unwrap();
        let secrets = project.secrets(false).unwrap();
        let state = crate::render::desired_state(&project, &secrets, None).unwrap();
        (dir, state.hosts)
    }

    fn file<'a>(hosts: &'a [HostState], host: &str, path: &str) -> Option<&'a str> {
        hosts
            .iter()
            .find(|h| h.host == host)?
            .roles
            .iter()
            .flat_map(|r| &r.files)
            .find(|f| f.path == path)
            .map(|f| f.content.as_str())
    }

    fn services(hosts: &[HostState], host: &str) -> Vec<String> {
        hosts
            .iter()
            .find(|h| h.host == host)
            .map(|h| {
                h.roles
                    .iter()
                    .flat_map(|r| r.services.iter().map(|s| s.name.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_repository_db_hosts_and_a_restore_target_each_get_their_part() {
        let (_dir, hosts) = rendered();
        let repo = file(&hosts, "lb1", "/etc/pgbackrest.conf").expect("repository config");
        assert!(repo.contains("repo1-path=/var/lib/pgbackrest\n"), "{repo}");
        assert!(repo.contains("repo1-cipher-type=aes-256-cbc\n"));
        for client in ["pg1", "pg2", "pg3", "pg4"] {
            assert!(
                repo.contains(&format!("tls-server-auth={client}=main\n")),
                "{client}: {repo}"
            );
        }
        assert!(repo.contains("pg3-host=10.0.0.13\n") && repo.contains("backup-standby=prefer\n"));
        for timer in ["full", "diff", "incr"] {
            let path = format!("/etc/systemd/system/pgstrap-backup-{timer}.timer");
            assert!(file(&hosts, "lb1", &path).is_some(), "{timer} timer");
        }
        assert!(services(&hosts, "lb1").contains(&"pgbackrest".to_owned()));

        let db = file(&hosts, "pg1", "/etc/pgbackrest.conf").expect("DB host config");
        assert!(
            db.contains("repo1-host=10.0.0.21\n") && db.contains("archive-async=y\n"),
            "{db}"
        );
        assert!(
            db.contains("tls-server-auth=lb1=main\n") && !db.contains("cipher-pass"),
            "{db}"
        );
        let patroni = file(&hosts, "pg1", "/etc/patroni/config.yml").unwrap();
        assert!(patroni.contains("archive_command: pgbackrest --stanza=main archive-push %p"));

        // The restore target reads main's repository for main's stanza into its own data
        // directory; it serves nothing and archives nothing.
        let target = file(&hosts, "pg4", "/etc/pgbackrest.conf").expect("restore target config");
        assert!(target.contains("repo1-host=10.0.0.21\n"), "{target}");
        assert!(
            target.contains("[main]\npg1-path=/var/lib/postgresql/17/scratch\n"),
            "{target}"
        );
        assert!(
            !target.contains("tls-server") && !target.contains("archive-async"),
            "{target}"
        );
        assert!(!services(&hosts, "pg4").contains(&"pgbackrest".to_owned()));
        let patroni = file(&hosts, "pg4", "/etc/patroni/config.yml").unwrap();
        assert!(!patroni.contains("archive_mode"), "{patroni}");
    }
}
