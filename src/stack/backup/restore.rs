//! `pgstrap restore --cluster SOURCE --into TARGET --to WHEN`: a point-in-time restore of a
//! cluster's backups into another cluster of the inventory (`restore_of: SOURCE`), the source
//! untouched. Driven by pgstrap, not by a Patroni bootstrap method (whose restores users find
//! fragile: patroni issues 1223, 1309, 2357):
//!
//! 1. everything is checked before anything changes (exit 2): the target point lies between the
//!    end of the oldest backup and now, the repository answers, the target cluster's hosts are
//!    prepared by `apply` and it holds no cluster yet (no Patroni running, no Patroni state in its
//!    etcd);
//! 2. on the target's first DB host, a data directory left there is moved aside (kept, named);
//!    `pgbackrest restore` with the target writes the data directory;
//! 3. PostgreSQL recovers to the target on its own (Unix socket only, archive_mode off, so
//!    nothing reaches the source's archive) and promotes; the recovery settings pgBackRest wrote
//!    are reset; it stops cleanly;
//! 4. Patroni starts on it and takes the data directory over as the new cluster's leader; the
//!    rest is the rollout's: the other members clone from it, the dynamic configuration follows
//!    the inventory, the VIP answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::info::StanzaInfo;
use crate::clients::gate::{wait_for, Poll};
use crate::clients::postgres;
use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;
use crate::stack::rollout::stage;

/// How far a restore replays the WAL archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Target {
    /// To the end of the archive.
    Latest,
    /// To a moment, in Unix seconds (UTC), with microseconds.
    Time { unix_micros: i64 },
    /// To a WAL position.
    Lsn(String),
    /// To a restore point made with `pg_create_restore_point(NAME)`.
    Name(String),
}

impl Target {
    /// `--to`: `latest`, a time (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC, with an
    /// optional `+HH:MM` offset), an LSN (`0/3000028`), or a restore point's name.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = |why: &str| {
            Error::usage(
                format!("--to `{text}`: {why}"),
                Some("write `latest`, a time (`2026-12-04 20:30:00+00:00` or RFC 3339), an LSN (`0/3000028`) or the name of a restore point".into()),
            )
        };
        if text == "latest" {
            return Ok(Self::Latest);
        }
        if let Some((high, low)) = text.split_once('/') {
            let hex =
                |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
            if hex(high) && hex(low) {
                return Ok(Self::Lsn(text.to_uppercase()));
            }
            return Err(bad("not an LSN (two hexadecimal numbers, e.g. 0/3000028)"));
        }
        if text.starts_with(|c: char| c.is_ascii_digit()) {
            return parse_time(text)
                .map(|unix_micros| Self::Time { unix_micros })
                .ok_or_else(|| bad("not a time pgstrap reads"));
        }
        if text.len() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Ok(Self::Name(text.to_owned()));
        }
        Err(bad(
            "not a restore point name (letters, digits, `_`, `-`, `.`, at most 63)",
        ))
    }

    /// pgBackRest's `--type` and `--target` for it.
    fn pgbackrest_args(&self) -> Vec<String> {
        match self {
            Self::Latest => vec!["--type=default".into()],
            Self::Time { unix_micros } => vec![
                "--type=time".into(),
                format!("--target={}", pg_time(*unix_micros)),
                "--target-action=promote".into(),
            ],
            Self::Lsn(lsn) => vec![
                "--type=lsn".into(),
                format!("--target={lsn}"),
                "--target-action=promote".into(),
            ],
            Self::Name(name) => vec![
                "--type=name".into(),
                format!("--target={name}"),
                "--target-action=promote".into(),
            ],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Latest => "the end of the WAL archive".into(),
            Self::Time { unix_micros } => pg_time(*unix_micros),
            Self::Lsn(lsn) => format!("LSN {lsn}"),
            Self::Name(name) => format!("restore point `{name}`"),
        }
    }
}

/// `2026-12-04 20:30:00.123456+00` for Unix microseconds.
fn pg_time(unix_micros: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
    );
    at.format(&format).unwrap_or_default()
}

/// A time as Unix microseconds: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` with an optional
/// `+HH[:MM]` / `Z` offset (UTC without one).
fn parse_time(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let micros = |at: time::OffsetDateTime| i64::try_from(at.unix_timestamp_nanos() / 1000).ok();
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return micros(at);
    }
    let text = text.replacen(' ', "T", 1);
    let text = match text.rfind(['+', '-']).filter(|i| *i > 10) {
        Some(i) if text[i + 1..].len() == 2 => format!("{text}:00"),
        Some(_) => text,
        None if text.ends_with('Z') => text,
        None => format!("{text}Z"),
    };
    time::OffsetDateTime::parse(&text, &Rfc3339)
        .ok()
        .and_then(micros)
}

/// What a restore did and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub source: String,
    pub into: String,
    pub target: Target,
    pub target_text: String,
    /// The target's first DB host, the new cluster's leader.
    pub leader: String,
    /// Data directories that were there before, moved aside (host, path).
    pub moved_aside: Vec<(String, String)>,
    /// `pgbackrest restore` (files) and PostgreSQL's recovery (WAL replay) to the promotion.
    pub restore_seconds: f64,
    pub recovery_seconds: f64,
    /// From the start to every member streaming in the new cluster.
    pub total_seconds: f64,
    /// The restored data directory's size.
    pub bytes: u64,
    /// What the rollout of the new cluster did after the leader.
    pub steps: Vec<String>,
}

/// The source and target clusters of a restore, as the inventory names them.
pub fn clusters<'a>(
    project: &'a Project,
    source: &str,
    into: &str,
) -> Result<(&'a Cluster, &'a Cluster)> {
    let source = crate::stack::primary_cluster(project, Some(source))?;
    super::repository_of(source)?;
    if into == source.name {
        // In place: the caller asked for it explicitly (`--in-place`).
        return Ok((source, source));
    }
    let target = project.inventory.clusters.get(into).ok_or_else(|| {
        Error::usage(
            format!("--into: no cluster `{into}` in the inventory"),
            Some(format!("declare the cluster to restore into, with `restore_of: {}` and its hosts, then `pgstrap apply`", source.name)),
        )
    })?;
    if target.restore_of.as_deref() != Some(source.name.as_str()) {
        return Err(Error::usage(
            format!(
                "cluster `{into}` is not a restore target of `{}`",
                source.name
            ),
            Some(format!("add `restore_of: {}` to cluster `{into}` and run `pgstrap apply` (it prepares the hosts and lets them read the repository), or restore over the cluster itself with `--in-place`", source.name)),
        ));
    }
    Ok((source, target))
}

/// The checks before anything changes: the target point within the repository's backups and
/// not in the future (judged against `now_micros`).
pub fn judge_target(target: &Target, info: &StanzaInfo, now_micros: i64) -> Result<()> {
    let Some(oldest) = info.backups.iter().find(|b| !b.error) else {
        return Err(Error::usage(
            format!("the repository holds no backup of {} to restore", info.name),
            Some("take one with `pgstrap backup`".into()),
        ));
    };
    match target {
        Target::Time { unix_micros } => {
            if *unix_micros < oldest.stopped * 1_000_000 {
                return Err(Error::usage(
                    format!(
                        "--to {} is before the end of the oldest backup ({}, {})",
                        pg_time(*unix_micros),
                        oldest.label,
                        pg_time(oldest.stopped * 1_000_000)
                    ),
                    Some("a point-in-time restore reaches from the end of the oldest backup to the newest archived WAL; `pgstrap status` lists the backups".into()),
                ));
            }
            if *unix_micros > now_micros {
                return Err(Error::usage(
                    format!("--to {} is in the future", pg_time(*unix_micros)),
                    Some("use `latest` for everything the archive holds".into()),
                ));
            }
        }
        Target::Lsn(lsn) => {
            if let (Some(want), Some(first)) = (
                lsn_value(lsn),
                oldest.lsn_stop.as_deref().and_then(lsn_value),
            ) {
                if want < first {
                    return Err(Error::usage(
                        format!(
                            "--to {lsn} is before the end of the oldest backup ({}, LSN {})",
                            oldest.label,
                            oldest.lsn_stop.as_deref().unwrap_or("?")
                        ),
                        Some("a restore reaches from the end of the oldest backup to the newest archived WAL".into()),
                    ));
                }
            }
        }
        Target::Latest | Target::Name(_) => {}
    }
    Ok(())
}

fn lsn_value(lsn: &str) -> Option<u64> {
    let (high, low) = lsn.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// Restore `source`'s backups to `target` into cluster `into`.
pub async fn restore(
    project: &Project,
    secrets: &Secrets,
    source_name: &str,
    into: &str,
    target: &Target,
    options: &crate::stack::rollout::Options,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let (source, cluster) = clusters(project, source_name, into)?;
    let repository = super::repository_of(source)?;

    // 1. Sessions, then every check before any change.
    let mut hosts: Vec<String> = cluster.hosts().cloned().collect();
    hosts.push(repository.to_owned());
    hosts.sort();
    hosts.dedup();
    let connects = hosts
        .iter()
        .map(|h| crate::exec::connect(project, h, secrets));
    let mut open = BTreeMap::new();
    let mut failed = None;
    for (host, session) in hosts.iter().zip(futures::future::join_all(connects).await) {
        match session {
            Ok(s) => {
                open.insert(host.clone(), s);
            }
            Err(e) => failed = Some(e),
        }
    }
    let result = match failed {
        Some(e) => Err(e),
        None => {
            run_restore(
                project, secrets, source, cluster, repository, target, options, &open, started,
            )
            .await
        }
    };
    futures::future::join_all(open.into_values().map(Session::close)).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_restore(
    project: &Project,
    secrets: &Secrets,
    source: &Cluster,
    cluster: &Cluster,
    repository: &str,
    target: &Target,
    options: &crate::stack::rollout::Options,
    open: &BTreeMap<String, Session>,
    started: Instant,
) -> Result<RestoreReport> {
    let run = RestoreRun {
        project,
        secrets,
        source,
        cluster,
        repository,
        target,
        options,
        open,
        in_place: cluster.name == source.name,
    };
    // 1. Every check before any change.
    run.check_repository().await?;
    run.check_no_database().await?;
    let version = project.postgres_version(
        project
            .inventory
            .hosts
            .get(&cluster.postgres[0])
            .ok_or_else(|| Error::failure("no first DB host", None))?,
        cluster,
    );
    let data_dir = format!("/var/lib/postgresql/{version}/{}", cluster.name);
    run.check_prepared(&data_dir).await?;
    run.archive_current().await?;

    // In place: the cluster stops (replicas first, the primary last: its shutdown archives
    // what is left of its WAL), and its Patroni state goes, so that Patroni adopts the restored
    // data directory as a new leader.
    if run.in_place {
        stop_cluster(project, secrets, cluster, open).await?;
    }

    // 2. Data directories left on the target's hosts moved aside; the restore on the first one.
    let moved_aside = run.move_aside(&data_dir, &version).await?;
    let leader = cluster.postgres[0].clone();
    let restore_seconds = run.pgbackrest_restore(&leader, &data_dir).await?;

    // 3. Recovery to the target, by PostgreSQL alone (no TCP, no archiving), then a clean stop.
    let (recovery_seconds, bytes) = run.recover(&leader, &data_dir, &version).await?;

    // 4. Patroni takes the data directory over; the rest is the rollout's.
    let mut report = crate::stack::rollout::RolloutReport::default();
    run.adopt(&leader, &mut report).await?;
    crate::stack::rollout::converge_cluster(project, cluster, secrets, open, options, &mut report)
        .await?;
    Ok(RestoreReport {
        source: source.name.clone(),
        into: cluster.name.clone(),
        target: target.clone(),
        target_text: target.describe(),
        leader,
        moved_aside,
        restore_seconds,
        recovery_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        bytes,
        steps: report.actions.into_iter().map(|a| a.what).collect(),
    })
}

/// What the steps of one restore share: the source, the target cluster and the open sessions.
struct RestoreRun<'a> {
    project: &'a Project,
    secrets: &'a Secrets,
    source: &'a Cluster,
    cluster: &'a Cluster,
    repository: &'a str,
    target: &'a Target,
    options: &'a crate::stack::rollout::Options,
    open: &'a BTreeMap<String, Session>,
    /// Restored over the source itself (`--in-place`).
    in_place: bool,
}

impl<'a> RestoreRun<'a> {
    fn session(&self, host: &str) -> Result<&'a Session> {
        self.open
            .get(host)
            .ok_or_else(|| Error::failure(format!("{host}: not connected"), None))
    }

    /// Check: the repository answers, holds the source's stanza, and the target point lies within
    /// its backups.
    async fn check_repository(&self) -> Result<()> {
        let (repository, source) = (self.repository, self.source);
        let info = super::info(self.session(repository)?, source).await.map_err(|e| {
            Error::usage(
                format!("the repository on {repository} does not answer: {e}"),
                Some("nothing was changed; check `systemctl status pgbackrest` on the repository host".into()),
            )
        })?;
        if !info.exists() {
            return Err(Error::usage(
                format!(
                    "the repository on {repository} has no stanza {}",
                    source.name
                ),
                Some(
                    "run `pgstrap apply`: it creates the stanza and takes the first full backup"
                        .into(),
                ),
            ));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
        judge_target(self.target, &info, now)
    }

    /// Check, unless in place: the target cluster holds no database yet (no Patroni state in its
    /// etcd).
    async fn check_no_database(&self) -> Result<()> {
        let cluster = self.cluster;
        match crate::clients::patroni::initialized(self.project, cluster).await {
            _ if self.in_place => Ok(()),
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(Error::usage(
                format!("cluster `{}` already holds a database (Patroni's state is in its etcd)", cluster.name),
                Some("restore into a cluster that was never bootstrapped, or over this one with `--in-place` (its data directories are moved aside)".into()),
            )),
            Err(e) => Err(Error::usage(
                format!("the etcd of cluster `{}` does not answer: {e}", cluster.name),
                Some(format!("run `pgstrap apply` first: it prepares cluster {}'s hosts and etcd", cluster.name)),
            )),
        }
    }

    /// Check: every DB host of the target is prepared by `apply` (see [`PREPARED`]).
    async fn check_prepared(&self, data_dir: &str) -> Result<()> {
        let source = self.source.name.as_str();
        let prepared = self.cluster.postgres.iter().map(|h| async move {
            let output = self
                .session(h)?
                .run(&RemoteCommand::script(
                    PREPARED,
                    &[data_dir, source],
                    "is this host prepared for the restore",
                ))
                .await
                .map_err(|e| Error::failure(e.to_string(), None))?;
            Ok::<_, Error>((h.clone(), output.stdout_text().trim().to_owned()))
        });
        for result in futures::future::join_all(prepared).await {
            let (host, state) = result?;
            // In place, Patroni runs there until it is stopped below.
            if state != "ready" && !(self.in_place && state == "Patroni is running") {
                return Err(Error::usage(
                    format!("{host} is not ready for the restore: {state}"),
                    Some(format!("run `pgstrap apply` (it prepares cluster {}'s hosts and leaves Patroni stopped there); nothing was changed", self.cluster.name)),
                ));
            }
        }
        Ok(())
    }

    /// The archive made current: when the source runs, its current WAL segment is switched and
    /// archived (`pgbackrest check` waits for it), so a target in the last minutes is reachable.
    async fn archive_current(&self) -> Result<()> {
        let (cluster, source) = (self.cluster, self.source);
        let current = super::run(
            self.session(self.repository)?,
            &super::pgbackrest(&source.name, &["check"], "archive the source's current WAL"),
            "",
        )
        .await;
        stage(
            self.options,
            match current {
                Ok(_) => format!("{}: the archive holds {}'s WAL up to now", cluster.name, source.name),
                Err(_) => format!("{}: {} did not archive its current WAL (not running?): restoring what the archive holds", cluster.name, source.name),
            },
        );
        Ok(())
    }

    /// Data directories left on the target's DB hosts moved aside (kept, named). Returns where.
    async fn move_aside(&self, data_dir: &str, version: &str) -> Result<Vec<(String, String)>> {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let aside = format!("{data_dir}.pgstrap-before-restore-{stamp}");
        let mut moved_aside = Vec::new();
        for host in &self.cluster.postgres {
            if postgres::move_aside(self.session(host)?, data_dir, &aside, version).await? {
                moved_aside.push((host.clone(), aside.clone()));
            }
        }
        Ok(moved_aside)
    }

    /// `pgbackrest restore` to the target writes the data directory on `leader`. Returns how long
    /// it took (seconds).
    async fn pgbackrest_restore(&self, leader: &str, data_dir: &str) -> Result<f64> {
        let leader_session = self.session(leader)?;
        stage(
            self.options,
            format!(
                "{}: pgbackrest restore to {} on {leader}",
                self.cluster.name,
                self.target.describe()
            ),
        );
        let restore_started = Instant::now();
        let mut args: Vec<String> = vec![format!("--pg1-path={data_dir}")];
        args.extend(self.target.pgbackrest_args());
        args.push("restore".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        super::run(
            leader_session,
            &super::pgbackrest(&self.source.name, &args, "restore the data directory"),
            "see /var/log/pgbackrest/ on this host and on the repository host; re-running the restore moves this partial data directory aside and starts again",
        )
        .await?;
        Ok(restore_started.elapsed().as_secs_f64())
    }

    /// PostgreSQL recovers to the target on `leader` alone and promotes; the recovery settings
    /// are reset and it stops cleanly. Returns how long the recovery took (seconds) and the size
    /// of the databases (bytes).
    async fn recover(&self, leader: &str, data_dir: &str, version: &str) -> Result<(f64, u64)> {
        let cluster = self.cluster;
        let leader_session = self.session(leader)?;
        let port = self
            .project
            .port(cluster, crate::project::Port::PostgreSQL)
            .to_string();
        stage(
            self.options,
            format!(
                "{}: PostgreSQL recovers to {}",
                cluster.name,
                self.target.describe()
            ),
        );
        let recovery_started = Instant::now();
        leader_session
            .run(&RemoteCommand::script(
                RECOVER,
                &[
                    data_dir,
                    version,
                    port.as_str(),
                    cluster.name.as_str(),
                    // In place the promoted timeline is archived into the cluster's own stanza,
                    // its history file first: a later restore sees it. Into another cluster,
                    // nothing may reach the source's archive.
                    if self.in_place { "on" } else { "off" },
                ],
                "start PostgreSQL for the recovery",
            ))
            .await
            .map_err(|e| {
                Error::failure(
                    e.to_string(),
                    Some(format!(
                        "see /var/log/postgresql/pgstrap-restore-{}.log on {leader}",
                        cluster.name
                    )),
                )
            })?;
        let port_ref = port.as_str();
        let sql = |q: &'static str| async move {
            postgres::psql_port(
                leader_session,
                "postgres",
                port_ref,
                q,
                "watch the recovery",
            )
            .await
        };
        wait_for(
            &format!("PostgreSQL on {leader} to recover to {} and promote", self.target.describe()),
            Duration::from_secs(3600),
            Duration::from_millis(500),
            &format!("see /var/log/postgresql/pgstrap-restore-{}.log on {leader}: a restore point that does not exist, or WAL missing from the archive, ends the recovery early", cluster.name),
            || async move {
                match sql("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()").await {
                    Ok(text) if text.trim().starts_with("f|") => Poll::Ready(()),
                    Ok(text) => Poll::NotYet(format!("in recovery, replayed to {}", text.trim().trim_start_matches("t|"))),
                    Err(e) => Poll::NotYet(e.to_string()),
                }
            },
        )
        .await?;
        let recovery_seconds = recovery_started.elapsed().as_secs_f64();
        let bytes = sql("SELECT sum(pg_database_size(oid)) FROM pg_database")
            .await?
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        postgres::psql_port(
            leader_session,
            "postgres",
            &port,
            RESET_RECOVERY,
            "reset the recovery settings pgBackRest wrote",
        )
        .await?;
        leader_session
            .run(&RemoteCommand::script(
                STOP,
                &[data_dir, version],
                "stop PostgreSQL after the recovery",
            ))
            .await
            .map_err(|e| Error::failure(e.to_string(), None))?;
        Ok((recovery_seconds, bytes))
    }

    /// Patroni started on `leader` takes the restored data directory over; in place, a full
    /// backup of the restored cluster follows.
    async fn adopt(
        &self,
        leader: &str,
        report: &mut crate::stack::rollout::RolloutReport,
    ) -> Result<()> {
        let cluster = self.cluster;
        stage(
            self.options,
            format!(
                "{}: Patroni takes the restored data directory over on {leader}",
                cluster.name
            ),
        );
        crate::stack::rollout::start_patroni(self.open, leader).await?;
        report.actions.push(crate::stack::rollout::Action {
            cluster: cluster.name.clone(),
            host: Some(leader.to_owned()),
            what: "started Patroni on the restored data directory".into(),
        });
        crate::stack::rollout::wait_adopted(self.project, cluster, self.secrets, self.options)
            .await?;
        // In place, the full backup comes before the other members: they are restored from the
        // newest backup, and every older one may lie past the point this timeline branched off
        // (PostgreSQL could not follow it from there). Taken from the primary: no replica runs
        // yet.
        if self.in_place {
            stage(
                self.options,
                format!("{}: a full backup of the restored cluster", cluster.name),
            );
            let taken = super::take(
                self.session(self.repository)?,
                cluster,
                self.repository,
                super::BackupType::Full,
                super::From::Primary,
            )
            .await?;
            report.actions.push(crate::stack::rollout::Action {
                cluster: cluster.name.clone(),
                host: Some(self.repository.to_owned()),
                what: format!(
                    "took a full backup of the restored cluster: {} ({:.1} s)",
                    taken.backup.label, taken.seconds
                ),
            });
        }
        Ok(())
    }
}

/// Stop Patroni (and with it PostgreSQL) on every member of `cluster`, replicas first and the
/// leader last, then clear its Patroni state in its etcd.
async fn stop_cluster(
    project: &Project,
    secrets: &Secrets,
    cluster: &Cluster,
    open: &BTreeMap<String, Session>,
) -> Result<()> {
    let patroni = crate::clients::patroni::Patroni::from_secrets(secrets)?;
    let leader = patroni
        .view(project, cluster)
        .await
        .and_then(|v| v.leader().map(|m| m.name.clone()))
        .and_then(|m| crate::project::names::member_hosts(project, cluster).remove(&m));
    let mut order: Vec<&String> = cluster
        .postgres
        .iter()
        .filter(|h| Some(*h) != leader.as_ref())
        .collect();
    order.extend(leader.as_ref());
    for host in order {
        let session = open
            .get(host)
            .ok_or_else(|| Error::failure(format!("{host}: not connected"), None))?;
        session
            .run(&RemoteCommand::stdin_script(
                "systemctl stop patroni\nsystemctl reset-failed patroni 2>/dev/null || true\n"
                    .into(),
                "stop Patroni",
            ))
            .await
            .map_err(|e| Error::failure(format!("{host}: {e}"), None))?;
    }
    let prefix = crate::clients::patroni::dcs_key(project, cluster, "");
    crate::clients::etcd::Etcd::new(&project.etcd_endpoints(cluster))
        .delete_prefix(&prefix)
        .await
        .map_err(|e| {
            Error::failure(
                format!("cluster {}: cannot clear its Patroni state in its etcd: {e}", cluster.name),
                Some("its etcd must be up; run the restore again once it is (the data directories are kept)".into()),
            )
        })?;
    Ok(())
}

/// `ready` when the host can take the restore: pgstrap's Patroni configuration there, Patroni
/// stopped, the source's stanza in /etc/pgbackrest.conf; else what is missing.
const PREPARED: &str = r#"set -u
dir="$1"; stanza="$2"
[ -f /etc/patroni/config.yml ] || { echo "no /etc/patroni/config.yml (not rolled out)"; exit 0; }
grep -q "^\[$stanza\]" /etc/pgbackrest.conf 2>/dev/null || { echo "/etc/pgbackrest.conf does not name stanza $stanza"; exit 0; }
if systemctl is-active --quiet patroni; then echo "Patroni is running"; exit 0; fi
echo ready
"#;

/// Move a non-empty data directory aside (kept, named); `moved` when it did. A PostgreSQL an
/// interrupted restore left running on it is stopped first.
/// Start PostgreSQL on the restored data directory for its recovery only: Unix socket only,
/// WAL archiving on or off as asked (off into another cluster: nothing may reach the source's
/// archive), its log beside the others, and
/// pg_hba/pg_ident from this data directory (Patroni's postgresql.conf names the source's).
const RECOVER: &str = r#"set -eu
dir="$1"; version="$2"; port="$3"; name="$4"; archive="$5"
log="/var/log/postgresql/pgstrap-restore-$name.log"
install -o postgres -g postgres -m 0640 /dev/null "$log"
runuser -u postgres -- "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$dir" -l "$log" -W \
  -o "-c listen_addresses='' -c port=$port -c unix_socket_directories=/var/run/postgresql -c archive_mode=$archive -c logging_collector=off -c hba_file=$dir/pg_hba.conf -c ident_file=$dir/pg_ident.conf" start
"#;

/// Stop it cleanly (a shutdown checkpoint), waiting.
const STOP: &str = r#"set -eu
dir="$1"; version="$2"
runuser -u postgres -- "/usr/lib/postgresql/$version/bin/pg_ctl" -D "$dir" -m fast -w -t 600 stop
"#;

/// What pgBackRest wrote to postgresql.auto.conf for the recovery, gone (the new cluster's
/// members must not replay to the target again, nor read the source's archive).
const RESET_RECOVERY: &str = "ALTER SYSTEM RESET restore_command;
ALTER SYSTEM RESET recovery_target;
ALTER SYSTEM RESET recovery_target_time;
ALTER SYSTEM RESET recovery_target_lsn;
ALTER SYSTEM RESET recovery_target_name;
ALTER SYSTEM RESET recovery_target_xid;
ALTER SYSTEM RESET recovery_target_action;
ALTER SYSTEM RESET recovery_target_inclusive;
ALTER SYSTEM RESET recovery_target_timeline;
ALTER SYSTEM RESET archive_mode;";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_written() {
        assert_eq!(Target::parse("latest").unwrap(), Target::Latest);
        assert_eq!(
            Target::parse("0/3000028").unwrap(),
            Target::Lsn("0/3000028".into())
        );
        assert_eq!(
            Target::parse("before_drop").unwrap(),
            Target::Name("before_drop".into())
        );
        let utc = Target::parse("2026-12-04 20:30:00").unwrap();
        assert_eq!(Target::parse("2026-12-04T20:30:00Z").unwrap(), utc);
        assert_eq!(Target::parse("2026-12-04 21:30:00+01").unwrap(), utc);
        assert_eq!(Target::parse("2026-12-04 21:30:00+01:00").unwrap(), utc);
        assert_eq!(utc.describe(), "2026-12-04 20:30:00.000000+00");
        let fine = Target::parse("2026-12-04 20:30:00.25").unwrap();
        assert_eq!(fine.describe(), "2026-12-04 20:30:00.250000+00");
        for bad in [
            "2026-13-04 20:30:00",
            "1/xyz",
            "drop table;",
            "2026-12-04 25:00",
        ] {
            let error = Target::parse(bad).expect_err(bad);
            assert_eq!(error.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn a_target_outside_the_backups_is_refused() {
        let info =
            super::super::info::parse(include_str!("testdata/info-full.json"), "main").unwrap();
        let stop = info.backups[0].stopped * 1_000_000;
        let now = stop + 3_600_000_000;
        let at = |micros| Target::Time {
            unix_micros: micros,
        };
        assert!(judge_target(&at(stop + 1), &info, now).is_ok());
        assert!(judge_target(&Target::Latest, &info, now).is_ok());
        let before = judge_target(&at(stop - 1_000_000), &info, now).unwrap_err();
        assert!(
            before
                .to_string()
                .contains("before the end of the oldest backup"),
            "{before}"
        );
        let future = judge_target(&at(now + 60_000_000), &info, now).unwrap_err();
        assert!(future.to_string().contains("in the future"), "{future}");
        assert!(judge_target(&Target::Lsn("0/1000000".into()), &info, now).is_err());
        assert!(judge_target(&Target::Lsn("1/0".into()), &info, now).is_ok());
        let empty = super::super::info::parse("[]", "main").unwrap();
        assert_eq!(
            judge_target(&Target::Latest, &empty, now)
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
