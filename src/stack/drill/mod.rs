//! `pgstrap drill`: a failure scenario run against a live cluster while clients write through the
//! VIP, measured as a client sees it. The drill injects the fault, heals it, waits until the
//! cluster has converged, then proves that no acknowledged write was lost and that no member
//! diverged (every member holds every acknowledged row and nothing the leader lacks, no replica's
//! position is past the leader's, every replica streams).
//!
//! `client.rs` owns the write clients, `fault.rs` the faults and their heals.

pub mod client;
pub mod fault;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clients::gate::{wait_for, Poll};
use crate::clients::patroni::Patroni;
use crate::clients::postgres::psql;
use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;
pub use fault::{HostFault, HostFaults, Injector, Scenario};

/// What the caller chooses.
#[derive(Clone)]
pub struct Options {
    pub scenario: Scenario,
    pub cluster: Option<String>,
    /// How long the fault lasts before it is healed.
    pub duration: Duration,
    /// The test hosts' harness (the lab) when the inventory's hosts may be its hosts.
    pub lab: Option<std::sync::Arc<dyn HostFaults>>,
    /// Allow the SSH-made faults on hosts that are not lab hosts.
    pub on_servers: bool,
    /// How long to wait for the cluster to converge after the heal.
    pub converge_timeout: Duration,
    /// Also write from the primary's own host, straight to its PostgreSQL ([`client::OnHost`]).
    pub client_on_primary: bool,
    /// Save every host's journal of the stack's services, from just before the fault to the
    /// end, in this directory (`HOST.log`): what explains a figure after the lab is gone.
    pub journals: Option<PathBuf>,
}

/// The on-host client's first id (the VIP's clients count from 1).
const ON_HOST_FIRST_ID: u64 = 1_000_000_000;

/// What one client saw.
#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    pub client: &'static str,
    pub attempted: u64,
    pub acknowledged: u64,
    /// Acknowledged writes missing from the leader after the drill.
    pub lost: u64,
    pub in_doubt: u64,
    /// Longest time without an acknowledged write, from the fault until the end.
    pub longest_gap_s: f64,
}

/// One member after the drill.
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub member: String,
    pub host: String,
    pub role: String,
    pub timeline: Option<u64>,
    /// Acknowledged writes this member lacks.
    pub missing: u64,
    /// Rows this member has that the leader does not (a diverged history).
    pub extra: u64,
    /// This member's position is past the leader's.
    pub ahead_of_leader: bool,
    pub streaming: bool,
}

/// The drill's result.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub scenario: Scenario,
    pub cluster: String,
    pub fault_hosts: Vec<String>,
    pub duration_s: f64,
    /// The random delay, within Patroni's `loop_wait`, before the fault (see [`drill`]).
    pub loop_offset_s: f64,
    pub leader_before: String,
    pub leader_after: String,
    /// The headline: longest time without an acknowledged write (reconnecting client).
    pub longest_gap_s: f64,
    /// From the heal until every member runs and every replica streams.
    pub converged_after_heal_s: f64,
    pub clients: Vec<ClientReport>,
    pub members: Vec<MemberReport>,
    /// Everything that makes the drill fail: lost writes, divergence, no convergence.
    pub problems: Vec<String>,
}

impl DrillReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Everything the drill needs to reach a cluster.
struct Reach<'a> {
    project: &'a Project,
    cluster: &'a Cluster,
    secrets: Secrets,
    patroni: Patroni,
    /// Member name → host name.
    hosts_by_member: BTreeMap<String, String>,
}

impl Reach<'_> {
    async fn view(&self) -> Option<crate::clients::patroni::ClusterView> {
        self.patroni.view(self.project, self.cluster).await
    }

    fn host_of(&self, member: &str) -> String {
        self.hosts_by_member
            .get(member)
            .cloned()
            .unwrap_or_else(|| member.to_owned())
    }

    async fn session(&self, host: &str) -> Result<Session> {
        crate::exec::connect(self.project, host, &self.secrets).await
    }

    /// A leader, every member running, every replica streaming from the leader, and every etcd
    /// member following etcd's leader. The last one matters after a partition heals: an etcd
    /// member cut off for 30 s can take half a minute more to rejoin (most likely its peers' TCP
    /// connections wait out their retransmission backoff) while Patroni and PostgreSQL look
    /// fine. A drill started meanwhile measures a cluster with one etcd member short: a power
    /// cut of another host then takes etcd's quorum and a new etcd leader renews every lease
    /// (seen: 30.5 s).
    async fn converged(&self) -> Poll<(String, crate::clients::patroni::ClusterView)> {
        let etcd_members = self.cluster.etcd.len();
        match crate::clients::etcd::health(&self.project.etcd_endpoints(self.cluster)).await {
            Ok(health) if health.all_healthy(etcd_members) => {}
            Ok(health) => return Poll::NotYet(format!("etcd: {}", health.describe())),
            Err(e) => return Poll::NotYet(format!("etcd: {e}")),
        }
        let Some(view) = self.view().await else {
            return Poll::NotYet("no Patroni REST API answers".into());
        };
        let Some(leader) = view.leader().map(|m| m.name.clone()) else {
            return Poll::NotYet(format!("no leader {}", view.describe()));
        };
        if view.members.len() != self.cluster.postgres.len()
            || view
                .members
                .iter()
                .any(|m| m.state != "running" && m.state != "streaming")
        {
            return Poll::NotYet(view.describe());
        }
        let Ok(session) = self.session(&self.host_of(&leader)).await else {
            return Poll::NotYet(format!("cannot reach the leader {leader} over SSH"));
        };
        let streaming = psql(
            &session,
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            "replicas streaming",
        )
        .await;
        session.close().await;
        match streaming.ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) if n + 1 >= self.cluster.postgres.len() => Poll::Ready((leader, view)),
            Some(n) => Poll::NotYet(format!("{n} replica(s) streaming {}", view.describe())),
            None => Poll::NotYet(format!("cannot read pg_stat_replication on {leader}")),
        }
    }
}

/// Run one drill.
pub async fn drill(project: &Project, options: &Options) -> Result<DrillReport> {
    let cluster = super::primary_cluster(project, options.cluster.as_deref())?;
    let secrets = project.secrets(false)?;
    let project = &project.with_live(super::live::gather_tls(project).await);
    let injector = injector(project, cluster, options)?;
    let vars = project.cluster_vars(cluster);
    let port = |key: &str| {
        vars.get_u64(key)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_default()
    };
    let vip = cluster.vip.map(|v| v.addr().to_string()).ok_or_else(|| {
        Error::usage(
            format!("cluster {} has no VIP", cluster.name),
            Some("a drill writes through the VIP: give the cluster balancers and a `vip`".into()),
        )
    })?;
    super::ops::maintenance::refuse_when_paused(project, &secrets, cluster, "a drill").await?;
    let hosts_by_member = crate::project::names::member_hosts(project, cluster);
    let reach = Reach {
        project,
        cluster,
        secrets: secrets.clone(),
        patroni: Patroni::from_secrets(&secrets)?,
        hosts_by_member,
    };

    // The cluster must be healthy before: a drill measures a fault, not an earlier one.
    let (leader_before, _) = wait_for(
        "a healthy cluster before the drill",
        Duration::from_secs(30),
        Duration::from_millis(500),
        "`pgstrap status -i INV` shows what is wrong; a drill starts only from a healthy cluster",
        || reach.converged(),
    )
    .await?;
    let primary_host = reach.host_of(&leader_before);
    let fault_hosts = fault_hosts(options.scenario, cluster, &primary_host, project).await?;

    let target = client::Target {
        address: vip,
        port: port("haproxy.write_port"),
        secrets: secrets.clone(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    };
    let clients = Clients::start(
        &reach,
        options,
        &target,
        &primary_host,
        port("postgresql.port"),
    )
    .await?;
    let epoch = clients.epoch;
    let loop_wait = Duration::from_secs(vars.get_u64("patroni.loop_wait").unwrap_or(10));
    let loop_offset = baseline(loop_wait).await;

    let fault_at = epoch.elapsed();
    let fault_wall_clock = std::time::SystemTime::now();
    let (healed_at, converged) =
        fault_and_converge(options, &reach, &injector, &fault_hosts, epoch).await;
    // A little more writing after convergence, so the end of the gap is measured.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (logs, end) = clients.stop(&reach, &primary_host).await?;
    if let Some(dir) = &options.journals {
        save_journals(&reach, dir, fault_wall_clock).await?;
    }
    let (leader_after, view) = converged?;
    let converged_after_heal_s = epoch.elapsed().saturating_sub(healed_at).as_secs_f64();

    let mut report = DrillReport {
        scenario: options.scenario,
        cluster: cluster.name.clone(),
        fault_hosts,
        duration_s: options.duration.as_secs_f64(),
        loop_offset_s: loop_offset.as_secs_f64(),
        leader_before,
        leader_after: leader_after.clone(),
        longest_gap_s: logs
            .first()
            .map(|l| l.longest_gap(fault_at, end).as_secs_f64())
            .unwrap_or_default(),
        converged_after_heal_s,
        clients: Vec::new(),
        members: Vec::new(),
        problems: Vec::new(),
    };
    check_members(&reach, &target, &leader_after, &view, &logs, &mut report).await?;
    report.clients = client_reports(&logs, fault_at, end);
    count_lost(&reach, &leader_after, &logs, &mut report).await?;
    if let Err(e) = client::cleanup(&target).await {
        report
            .problems
            .push(format!("could not drop the drill's schema: {e}"));
    }
    Ok(report)
}

/// A baseline: the clients acknowledge writes before the fault. Then a random part of
/// Patroni's loop: a real fault lands anywhere in it, and how long a dead primary's leader key
/// outlives it depends on when its last renewal was (between `ttl - loop_wait` and `ttl`).
/// Without it, the fault's place in the loop follows from the previous drill's timings, and runs
/// in a row repeat one place (measured: three power cuts all at 21-23 s, or all at 14-16 s).
/// Returns that random part.
async fn baseline(loop_wait: Duration) -> Duration {
    let loop_offset = loop_wait.mul_f64(rand::random::<f64>());
    tokio::time::sleep(Duration::from_secs(2) + loop_offset).await;
    loop_offset
}

/// Each client's part of the report (its lost writes are counted later, on the leader).
fn client_reports(
    logs: &[client::ClientLog],
    fault_at: Duration,
    end: Duration,
) -> Vec<ClientReport> {
    logs.iter()
        .map(|log| ClientReport {
            client: log.style.name(),
            attempted: log.attempted,
            acknowledged: log.acknowledged.len() as u64,
            lost: 0,
            in_doubt: log.in_doubt,
            longest_gap_s: log.longest_gap(fault_at, end).as_secs_f64(),
        })
        .collect()
}

/// The drill's write clients while they run: two through the VIP, and one on the primary's
/// host when asked.
struct Clients {
    /// When they started: every time of the drill is measured from it.
    epoch: Instant,
    running: [client::Running; 2],
    on_host: Option<client::OnHost>,
}

impl Clients {
    /// The drill's table created through the VIP, then the clients started.
    async fn start(
        reach: &Reach<'_>,
        options: &Options,
        target: &client::Target,
        primary_host: &str,
        postgres_port: u16,
    ) -> Result<Self> {
        client::prepare(target).await.map_err(|e| {
            Error::failure(
                format!("cannot create the drill's table through the VIP: {e}"),
                None,
            )
        })?;
        let epoch = Instant::now();
        let ids = Arc::new(AtomicU64::new(1));
        let running = [client::Style::Reconnecting, client::Style::LongLived]
            .map(|style| client::start(target.clone(), style, ids.clone(), epoch));
        let on_host = if options.client_on_primary {
            let session = reach.session(primary_host).await?;
            let limit = options.duration + options.converge_timeout + Duration::from_secs(120);
            let started =
                client::OnHost::start(&session, postgres_port, ON_HOST_FIRST_ID, limit, epoch)
                    .await;
            session.close().await;
            Some(started?)
        } else {
            None
        };
        Ok(Self {
            epoch,
            running,
            on_host,
        })
    }

    /// Every client stopped; their logs, and when they stopped (since the epoch).
    async fn stop(
        self,
        reach: &Reach<'_>,
        primary_host: &str,
    ) -> Result<(Vec<client::ClientLog>, Duration)> {
        let mut logs = Vec::new();
        for running in self.running {
            logs.push(running.stop().await);
        }
        let end = self.epoch.elapsed();
        if let Some(on_host) = self.on_host {
            // The former primary's host (back after the heal) holds the client's log.
            let session = reach.session(primary_host).await?;
            let log = on_host.stop(&session).await;
            session.close().await;
            logs.push(log?);
        }
        Ok((logs, end))
    }
}

/// The fault injected and healed, then gate: the cluster converged. Returns when the heal ended
/// (since `epoch`) and the converged leader and view, or why not.
async fn fault_and_converge(
    options: &Options,
    reach: &Reach<'_>,
    injector: &Injector,
    fault_hosts: &[String],
    epoch: Instant,
) -> (
    Duration,
    Result<(String, crate::clients::patroni::ClusterView)>,
) {
    let mut sessions = Vec::new();
    let outcome = run_fault(options, reach, injector, fault_hosts, &mut sessions).await;
    let healed_at = epoch.elapsed();
    for session in sessions {
        session.close().await;
    }
    let converged = match outcome {
        Ok(()) => {
            wait_for(
                "the cluster to converge after the heal",
                options.converge_timeout,
                Duration::from_millis(500),
                "see `pgstrap status -i INV` and `journalctl -u patroni` on the members",
                || reach.converged(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    (healed_at, converged)
}

/// The services whose journals explain a drill.
const JOURNAL_UNITS: &[&str] = &[
    "patroni",
    "etcd",
    "haproxy",
    "keepalived",
    "pgbouncer",
    "pgstrap-etcd-leader-away",
    "pgstrap-postmaster-watch",
];

/// Every host's journal of [`JOURNAL_UNITS`] from 5 s before the fault, in `dir/HOST.log`. A
/// host that cannot be reached gets a file that says so: the others are still worth reading.
async fn save_journals(reach: &Reach<'_>, dir: &Path, fault: std::time::SystemTime) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::failure(format!("cannot create {}: {e}", dir.display()), None))?;
    let since = fault
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_sub(5);
    let mut argv = vec![
        "journalctl".to_owned(),
        "--no-pager".to_owned(),
        "-o".to_owned(),
        "short-precise".to_owned(),
        format!("--since=@{since}"),
    ];
    for unit in JOURNAL_UNITS {
        argv.push(format!("--unit={unit}"));
    }
    let command = RemoteCommand::new(&argv);
    let hosts: BTreeSet<&String> = reach.cluster.hosts().collect();
    // Every host at once: a drill's journals are read after the drill, not during it.
    let texts =
        futures::future::join_all(hosts.iter().map(|h| host_journal(reach, h, &command))).await;
    for (host, text) in hosts.into_iter().zip(texts) {
        let path = dir.join(format!("{host}.log"));
        std::fs::write(&path, text)
            .map_err(|e| Error::failure(format!("cannot write {}: {e}", path.display()), None))?;
    }
    Ok(())
}

/// One host's journal as `command` prints it, or why it could not be read.
async fn host_journal(reach: &Reach<'_>, host: &str, command: &RemoteCommand) -> String {
    match reach.session(host).await {
        Ok(session) => {
            let output = session.output(command).await;
            session.close().await;
            match output {
                Ok(output) => output.stdout_text(),
                Err(e) => format!("journalctl failed on {host}: {e}\n"),
            }
        }
        Err(e) => format!("cannot reach {host}: {e}\n"),
    }
}

/// Choose how faults are made, refusing what cannot be done safely.
fn injector(project: &Project, cluster: &Cluster, options: &Options) -> Result<Injector> {
    if let Some(lab) = &options.lab {
        let hosts = lab.hosts();
        let all_lab = cluster.hosts().all(|h| {
            hosts
                .iter()
                .any(|(name, address)| name == h && *address == project.address(h))
        });
        if all_lab {
            return Ok(Injector::Lab(lab.clone()));
        }
    }
    if options.scenario.lab_only() {
        return Err(Error::usage(
            format!(
                "`{}` needs lab hosts: cluster {}'s hosts are not the lab's",
                options.scenario.name(),
                cluster.name
            ),
            Some("on real servers: kill-postmaster, kill-patroni, lose-etcd-quorum, lose-one-etcd, switchover (with --on-servers)".into()),
        ));
    }
    if !options.on_servers {
        return Err(Error::usage(
            format!("cluster {}'s hosts are not lab hosts", cluster.name),
            Some("a drill injects real faults; on real servers pass --on-servers to confirm (every fault is healed by a timer on the host itself)".into()),
        ));
    }
    Ok(Injector::Ssh)
}

/// The hosts a scenario's fault lands on.
async fn fault_hosts(
    scenario: Scenario,
    cluster: &Cluster,
    primary_host: &str,
    project: &Project,
) -> Result<Vec<String>> {
    let etcd_leader_first = || async {
        let health = crate::clients::etcd::health(&project.etcd_endpoints(cluster))
            .await
            .map_err(|e| Error::failure(e, None))?;
        let leader_address = health
            .members
            .iter()
            .find(|m| m.leader)
            .map(|m| m.client_url.clone())
            .unwrap_or_default();
        let mut hosts = cluster.etcd.clone();
        hosts.sort_by_key(|h| !leader_address.contains(&format!("//{}:", project.address(h))));
        Ok::<_, Error>(hosts)
    };
    Ok(match scenario {
        Scenario::Switchover => Vec::new(),
        Scenario::LoseOneEtcd | Scenario::IsolateEtcdLeader => {
            etcd_leader_first().await?.into_iter().take(1).collect()
        }
        Scenario::LoseEtcdQuorum => {
            let majority = cluster.etcd.len() / 2 + 1;
            etcd_leader_first()
                .await?
                .into_iter()
                .take(majority)
                .collect()
        }
        _ => vec![primary_host.to_owned()],
    })
}

/// Inject, hold, heal.
async fn run_fault(
    options: &Options,
    reach: &Reach<'_>,
    injector: &Injector,
    hosts: &[String],
    sessions: &mut Vec<Session>,
) -> Result<()> {
    use fault::Fault;
    let fault = match options.scenario {
        Scenario::Switchover => {
            crate::stack::ops::switchover::switchover(
                reach.project,
                &reach.secrets,
                Some(&reach.cluster.name),
                None,
            )
            .await?;
            return Ok(());
        }
        Scenario::KillPostmaster => Fault::KillPostmaster,
        Scenario::KillPatroni => Fault::KillPatroni,
        Scenario::PowerCutPrimary => Fault::PowerCut,
        Scenario::IsolatePrimary | Scenario::IsolateEtcdLeader => Fault::Isolate,
        Scenario::HangPrimary => Fault::Freeze,
        Scenario::LoseEtcdQuorum | Scenario::LoseOneEtcd => Fault::StopEtcd,
    };
    for host in hosts {
        sessions.push(reach.session(host).await?);
    }
    for (host, session) in hosts.iter().zip(sessions.iter()) {
        fault::inject(injector, &fault, host, session, options.duration).await?;
    }
    tokio::time::sleep(options.duration).await;
    let mut first_error = None;
    for (host, session) in hosts.iter().zip(sessions.iter()) {
        // A power-cut or isolated host's old connection is dead: heal with a new one.
        let fresh;
        let session = if matches!(fault, Fault::StopEtcd) {
            fresh = reach.session(host).await;
            fresh.as_ref().unwrap_or(session)
        } else {
            session
        };
        if let Err(e) = fault::heal(injector, &fault, host, session).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The drill ids a member holds (as the postgres user over SSH, so it works on any network).
async fn ids_on(reach: &Reach<'_>, host: &str) -> Result<BTreeSet<u64>> {
    let session = reach.session(host).await?;
    let text = psql(
        &session,
        "postgres",
        &format!("SELECT id FROM {}.writes", client::SCHEMA),
        "drill rows",
    )
    .await;
    session.close().await;
    Ok(text?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Every member: a marker written last reaches it (it replays the leader's history), it holds
/// what the leader holds and nothing else, and its position is not past the leader's.
async fn check_members(
    reach: &Reach<'_>,
    target: &client::Target,
    leader: &str,
    view: &crate::clients::patroni::ClusterView,
    logs: &[client::ClientLog],
    report: &mut DrillReport,
) -> Result<()> {
    let marker = 0u64;
    write_marker(target, marker).await?;
    let leader_host = reach.host_of(leader);
    let leader_ids = ids_on(reach, &leader_host).await?;
    let acknowledged: BTreeSet<u64> = logs
        .iter()
        .flat_map(|l| l.acknowledged.iter().map(|(id, _)| *id))
        .collect();
    let leader_session = reach.session(&leader_host).await?;
    for member in &view.members {
        let host = reach.host_of(&member.name);
        let (ids, streaming) = match replayed_ids(reach, &member.name, &host, marker).await {
            Ok(ids) => (ids, true),
            Err(e) => {
                report.problems.push(format!("{}: {}", member.name, e));
                (ids_on(reach, &host).await.unwrap_or_default(), false)
            }
        };
        let ahead = if member.name == leader {
            false
        } else {
            ahead_of_leader(reach, &host, &leader_session).await?
        };
        let missing = acknowledged.difference(&ids).count() as u64;
        let extra = ids
            .difference(&leader_ids)
            .filter(|id| **id != marker)
            .count() as u64;
        if missing > 0 {
            report.problems.push(format!(
                "{} lacks {missing} acknowledged write(s)",
                member.name
            ));
        }
        if extra > 0 {
            report.problems.push(format!(
                "{} holds {extra} row(s) the leader does not: a diverged history",
                member.name
            ));
        }
        if ahead {
            report.problems.push(format!(
                "{}'s replay position is past the leader's: a diverged history",
                member.name
            ));
        }
        report.members.push(MemberReport {
            member: member.name.clone(),
            host,
            role: member.role.clone(),
            timeline: member.timeline,
            missing,
            extra,
            ahead_of_leader: ahead,
            streaming: member.name == leader || streaming,
        });
    }
    leader_session.close().await;
    Ok(())
}

/// A marker row written last, through the VIP: a member that holds it has replayed the
/// leader's history up to the end of the drill.
async fn write_marker(target: &client::Target, marker: u64) -> Result<()> {
    let write = super::verify::connect(&target.address, target.port, &target.secrets)
        .await
        .map_err(|e| Error::failure(format!("marker write through the VIP: {e}"), None))?;
    super::verify::rows(
        &write,
        &format!(
            "INSERT INTO {}.writes (id, client) VALUES ({marker}, 'marker') ON CONFLICT DO NOTHING",
            client::SCHEMA
        ),
    )
    .await
    .map_err(|e| Error::failure(format!("marker write through the VIP: {e}"), None))?;
    Ok(())
}

/// Wait (bounded) until the marker has arrived on `member`: then it has replayed the leader's
/// history up to the end of the drill. Returns the ids it holds.
async fn replayed_ids(
    reach: &Reach<'_>,
    member: &str,
    host: &str,
    marker: u64,
) -> Result<BTreeSet<u64>> {
    wait_for(
        &format!("the drill's last write to reach {member}"),
        Duration::from_secs(30),
        Duration::from_millis(300),
        "the member does not replay the leader's history: see `patronictl list` and its PostgreSQL log",
        || async {
            match ids_on(reach, host).await {
                Ok(ids) if ids.contains(&marker) => Poll::Ready(ids),
                Ok(_) => Poll::NotYet("not there yet".into()),
                Err(e) => Poll::NotYet(e.to_string()),
            }
        },
    )
    .await
}

/// Whether the replica on `host` has replayed past the leader's current position (a diverged
/// history); false when either position cannot be read.
async fn ahead_of_leader(reach: &Reach<'_>, host: &str, leader_session: &Session) -> Result<bool> {
    let session = reach.session(host).await?;
    let replay = psql(
        &session,
        "postgres",
        "SELECT pg_last_wal_replay_lsn()",
        "replay position",
    )
    .await;
    session.close().await;
    Ok(match replay.map(|s| s.trim().to_owned()) {
        Ok(lsn) if !lsn.is_empty() => psql(
            leader_session,
            "postgres",
            &format!("SELECT pg_wal_lsn_diff('{lsn}', pg_current_wal_lsn()) > 0"),
            "compare positions",
        )
        .await
        .map(|t| t.trim() == "t")
        .unwrap_or(false),
        _ => false,
    })
}

/// Per client: acknowledged writes the leader does not hold.
async fn count_lost(
    reach: &Reach<'_>,
    leader: &str,
    logs: &[client::ClientLog],
    report: &mut DrillReport,
) -> Result<()> {
    let on_leader = ids_on(reach, &reach.host_of(leader)).await?;
    for (log, summary) in logs.iter().zip(report.clients.iter_mut()) {
        summary.lost = log
            .acknowledged
            .iter()
            .filter(|(id, _)| !on_leader.contains(id))
            .count() as u64;
    }
    let lost: u64 = report.clients.iter().map(|c| c.lost).sum();
    if lost > 0 {
        report
            .problems
            .insert(0, format!("{lost} acknowledged write(s) lost"));
    }
    Ok(())
}
