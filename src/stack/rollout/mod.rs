//! The one-command rollout, in the order the stack needs (../shared/FIELD.md):
//!
//! 1. preflight on every host at once; one report, nothing changed when anything is wrong;
//! 2. the engine brings every host to its desired state in ONE run (one apt transaction per host;
//!    etcd is started by its role, Patroni is left to step 4);
//! 3. gate: every etcd cluster healthy with a leader (etcd API);
//! 4. Patroni, per cluster, primary sides first: the designated first member, gate `/primary`
//!    (or `/standby-leader`), then the replicas in parallel, gate: each streams (pg_stat_replication
//!    on the leader); the dynamic configuration is kept in step with the inventory (`PATCH
//!    /config`, one request); a parameter that needs a restart is reported as pending;
//! 5. PgBouncer's auth role and lookup function on each primary;
//! 6. gate: the VIP answers and its write port reaches the primary;
//! 7. verify with real clients.
//!
//! Re-running it changes nothing: each step first looks, then acts only on a difference.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

mod cluster;
pub mod dynamic_config;
mod plan;
pub mod preflight;

pub use plan::{plan_orchestration, removals, PlanStep};

use super::members;
use super::verify::{self, VerifyReport};
use crate::clients::gate::{wait_for, Poll};
use crate::clients::patroni::Patroni;
use crate::clients::postgres::{self, DefaultCluster};
use crate::connect::{RemoteCommand, Session, Target};
use crate::error::{Error, Result};
use crate::exec::{self, timed};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;
pub(crate) use cluster::converge_cluster;
pub(crate) use cluster::start_patroni;
use preflight::Problem;

/// What the caller can choose.
#[derive(Debug, Clone)]
pub struct Options {
    pub engine: exec::Options,
    /// Skip the final verification.
    pub skip_verify: bool,
    /// How long each gate may wait.
    pub gate_timeout: Duration,
    /// Replication lag a healthy replica may have (bytes).
    pub max_lag_bytes: u64,
    /// Apply parameters that need a restart by a rolling restart (replicas, switchover, old
    /// primary); otherwise they are reported as pending.
    pub rolling_restart: bool,
    /// Allow a membership change that leaves a cluster with one DB member (no replica).
    pub allow_no_replica: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            engine: exec::Options::default(),
            skip_verify: false,
            gate_timeout: Duration::from_secs(180),
            max_lag_bytes: 16 * 1024 * 1024,
            rolling_restart: false,
            allow_no_replica: false,
        }
    }
}

/// One orchestration action (what the engine does not do): started Patroni on a host, patched
/// the dynamic configuration, created the auth function…
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub cluster: String,
    pub host: Option<String>,
    pub what: String,
}

impl Action {
    /// An action of no one cluster or host (a member that retired, a departure prepared).
    fn global(what: String) -> Self {
        Self {
            cluster: String::new(),
            host: None,
            what,
        }
    }
}

/// The outcome of a rollout.
#[derive(Debug, Default, Serialize)]
pub struct RolloutReport {
    pub preflight: Vec<Problem>,
    pub engine: Option<exec::Report>,
    pub actions: Vec<Action>,
    /// Settings changed in the dynamic configuration that wait for a restart.
    pub pending_restart: Vec<String>,
    pub verify: Option<VerifyReport>,
    pub duration_ms: u64,
}

impl RolloutReport {
    /// Changes made by the engine plus orchestration actions.
    pub fn changes(&self) -> usize {
        self.engine.as_ref().map_or(0, exec::Report::total_changes) + self.actions.len()
    }

    pub fn ok(&self) -> bool {
        !self.preflight.iter().any(|p| !p.warning)
            && self.engine.as_ref().is_some_and(|e| e.exit_code() == 0)
            && self.verify.as_ref().is_none_or(VerifyReport::ok)
    }
}

/// Tell the UI what the orchestration is doing.
pub(crate) fn stage(options: &Options, message: impl Into<String>) {
    let message = message.into();
    if let Some(events) = &options.engine.events {
        let _ = events.send(exec::Event::Stage { message });
    }
}

/// Roll out the whole stack (or converge it when it is there).
pub async fn rollout(project: &Project, options: Options) -> Result<RolloutReport> {
    let started = std::time::Instant::now();
    let secrets = timed("secrets and certificates", async { project.secrets(true) }).await?;
    let mut report = RolloutReport {
        preflight: Vec::new(),
        engine: None,
        actions: Vec::new(),
        pending_restart: Vec::new(),
        verify: None,
        duration_ms: 0,
    };

    // 1. Preflight: every host at once.
    stage(&options, "preflight: every host at once");
    // The desired state is rendered once, for each host's release: preflight judges it, the
    // engine applies it, over the connections opened here.
    let project = &project.with_live(timed("live state", super::live::gather(project)).await);
    let prepared = timed(
        "connect, releases, identity",
        exec::prepare(project, &secrets, &options.engine),
    )
    .await?;
    let project = &prepared.project.clone();
    if let Some((_, error)) = prepared.unreachable.first() {
        return Err(Error::failure(error.to_string(), error.hint.clone()));
    }
    // Every host agreed with the inventory's identity: what was made up may be kept now.
    project.persist(&secrets)?;
    let open = prepared.sessions;
    let result = converge(
        project,
        &options,
        &secrets,
        prepared.desired,
        prepared.targets,
        &open,
        &mut report,
    )
    .await;
    timed("close", close(open)).await;
    result?;

    // 7. Verify (when everything before went through).
    let converged = !report.preflight.iter().any(|p| !p.warning)
        && report.engine.as_ref().is_some_and(|e| e.exit_code() == 0);
    if converged && !options.skip_verify {
        stage(
            &options,
            "verify: real clients through the VIP, PgBouncer, etcd and Patroni",
        );
        report.verify = Some(
            timed(
                "verify",
                verify::verify(project, &secrets, options.max_lag_bytes),
            )
            .await,
        );
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Steps 1–6 over the open connections; stops early (Ok) when preflight or the engine failed,
/// which the report then shows.
async fn converge(
    project: &Project,
    options: &Options,
    secrets: &Secrets,
    desired: crate::state::DesiredState,
    targets: Vec<Target>,
    open: &BTreeMap<String, Session>,
    report: &mut RolloutReport,
) -> Result<()> {
    report.preflight = timed("preflight", preflight_problems(project, &desired, open)).await?;
    if report.preflight.iter().any(|p| !p.warning) {
        return Ok(());
    }
    let etcd_changes = timed(
        "DR roles, fences, membership",
        prepare_changes(project, options, secrets, open, report),
    )
    .await?;

    // 2. The engine: every role on every host.
    stage(options, "configure: packages and files on every host");
    // The engine reuses the connections preflight opened (one ControlMaster per host).
    let mut engine_options = options.engine.clone();
    engine_options.sessions = open.clone();
    // What each host's roles manage: a running service outside it belongs to a role the host
    // left, stopped at the end.
    let desired_services = desired.service_names();
    let engine = timed(
        "engine",
        exec::run(desired, targets, exec::Mode::Apply, engine_options),
    )
    .await;
    let engine_ok = engine.exit_code() == 0;
    report.engine = Some(engine);
    if !engine_ok {
        return Ok(());
    }
    timed(
        "default clusters",
        drop_default_clusters(project, open, report),
    )
    .await?;

    // 3–6, cluster by cluster: primary sides first, then their standbys.
    let mut order: Vec<&Cluster> = project
        .inventory
        .clusters
        .values()
        .filter(|c| c.standby_of.is_none())
        .collect();
    order.extend(
        project
            .inventory
            .clusters
            .values()
            .filter(|c| c.standby_of.is_some()),
    );
    for cluster in order {
        if let Some(change) = etcd_changes.get(&cluster.name) {
            stage(options, format!("{}: etcd membership", cluster.name));
            for what in members::etcd::converge(project, cluster, change, open).await? {
                report.actions.push(Action {
                    cluster: cluster.name.clone(),
                    host: None,
                    what,
                });
            }
            members::etcd::settle_joined(project, cluster, change, open, secrets).await?;
        }
        timed(
            &format!("cluster {}", cluster.name),
            converge_cluster(project, cluster, secrets, open, options, report),
        )
        .await?;
    }
    timed(
        "retired services",
        stop_retired(project, secrets, open, &desired_services, report),
    )
    .await
}

/// Before the engine: the DR roles checked, fenced clusters prepared for their rebuild, and the
/// membership changes refused when unsafe or prepared (a leaving leader hands over). Returns the
/// etcd membership change of each cluster that has one.
async fn prepare_changes(
    project: &Project,
    options: &Options,
    secrets: &Secrets,
    open: &BTreeMap<String, Session>,
    report: &mut RolloutReport,
) -> Result<BTreeMap<String, members::etcd::Change>> {
    // The running clusters' DR roles must match the inventory's `standby_of` (apply never
    // reverses a promotion).
    let patroni = Patroni::from_secrets(secrets)?;
    super::dr::refuse_role_mismatch(project, &patroni).await?;
    // A cluster fenced by an emergency promotion, now a standby of the promoted one in the
    // inventory: prepared to be bootstrapped again as such (below, like a new standby cluster).
    for (cluster, what) in super::dr::rebuild::prepare_fenced(project, open).await? {
        report.actions.push(Action {
            cluster,
            host: None,
            what,
        });
    }
    // Membership changes: refused before anything changes when unsafe (exit 2); a leaving DB
    // member that leads hands over first, so the balancers never lose their primary.
    let mut etcd_changes = BTreeMap::new();
    for cluster in project.inventory.clusters.values() {
        if let Some(change) = members::etcd::change(project, cluster).await {
            if !change.is_empty() {
                members::etcd::refuse_unsafe(project, cluster, &change, open).await?;
                etcd_changes.insert(cluster.name.clone(), change);
            }
        }
    }
    let departures =
        members::retire::prepare_departures(project, secrets, &patroni, options.allow_no_replica);
    report
        .actions
        .extend(departures.await?.into_iter().map(Action::global));
    Ok(etcd_changes)
}

/// After the engine: Debian's untouched default cluster dropped on every DB host (one holding
/// data is an error: preflight reported it).
async fn drop_default_clusters(
    project: &Project,
    open: &BTreeMap<String, Session>,
    report: &mut RolloutReport,
) -> Result<()> {
    let (untouched, problems) = default_clusters(project, open).await?;
    if let Some(problem) = problems.first() {
        return Err(Error::failure(
            format!("{}: {}", problem.host, problem.message),
            Some(problem.hint.clone()),
        ));
    }
    for (host, version) in &untouched {
        if let Some(session) = open.get(host) {
            postgres::drop_default_cluster(session, version).await?;
            report.actions.push(Action {
                cluster: String::new(),
                host: Some(host.clone()),
                what: format!("dropped Debian's untouched default cluster {version}/main"),
            });
        }
    }
    Ok(())
}

/// Hosts that left a role: its services stopped and disabled (etcd only once not a member).
async fn stop_retired(
    project: &Project,
    secrets: &Secrets,
    open: &BTreeMap<String, Session>,
    desired_services: &BTreeMap<String, std::collections::BTreeSet<String>>,
    report: &mut RolloutReport,
) -> Result<()> {
    let mut etcd_members = Vec::new();
    for cluster in project.inventory.clusters.values() {
        etcd_members.extend(members::etcd::member_hosts(project, cluster).await);
    }
    let patroni = Patroni::from_secrets(secrets)?;
    let retired =
        members::retire::stop_retired(project, open, desired_services, &etcd_members, &patroni);
    report
        .actions
        .extend(retired.await?.into_iter().map(Action::global));
    Ok(())
}

/// Every check of a rollout's preflight over open connections (changes nothing): each host's
/// own (a supported release, disk, clock, ports, its name), one release per cluster, the running
/// clusters' live settings, and Debian's default cluster (never dropped when it holds data).
pub async fn preflight_problems(
    project: &Project,
    desired: &crate::state::DesiredState,
    open: &BTreeMap<String, Session>,
) -> Result<Vec<Problem>> {
    let checks = desired.hosts.iter().filter_map(|state| {
        open.get(&state.host)
            .map(|session| preflight::check_host(session, state))
    });
    let mut problems: Vec<Problem> = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    problems.extend(preflight::judge_releases(project));
    problems.extend(preflight::judge_live(project));
    problems.extend(default_clusters(project, open).await?.1);
    Ok(problems)
}

/// `pgstrap preflight`: connect to every host and run the rollout's preflight, changing nothing
/// (no secret or certificate is written either). An unreachable host is a problem of its own.
pub async fn preflight_only(project: &Project) -> Result<Vec<Problem>> {
    let secrets = project.secrets(true)?;
    let project = &project.with_live(super::live::gather(project).await);
    let prepared = exec::prepare(project, &secrets, &exec::Options::default()).await?;
    let project = &prepared.project.clone();
    let mut problems: Vec<Problem> = prepared
        .unreachable
        .iter()
        .map(|(host, error)| Problem {
            host: host.clone(),
            message: error.to_string(),
            hint: error.hint.clone().unwrap_or_default(),
            warning: false,
        })
        .collect();
    problems.extend(preflight_problems(project, &prepared.desired, &prepared.sessions).await?);
    close(prepared.sessions).await;
    Ok(problems)
}

/// Debian's default cluster on every DB host (of the PostgreSQL version that host runs): the
/// hosts where it is untouched (safe to drop), with the version, and a problem for each host
/// where it holds data.
async fn default_clusters(
    project: &Project,
    open: &BTreeMap<String, Session>,
) -> Result<(Vec<(String, String)>, Vec<Problem>)> {
    let hosts: Vec<(String, String)> = project
        .inventory
        .clusters
        .values()
        .flat_map(|c| {
            c.postgres.iter().filter_map(move |h| {
                let host = project.inventory.hosts.get(h)?;
                Some((h.clone(), project.postgres_version(host, c)))
            })
        })
        .collect();
    let checks = hosts.iter().filter_map(|(host, version)| {
        open.get(host).map(|session| async move {
            (
                host.clone(),
                version.clone(),
                postgres::default_cluster(session, version).await,
            )
        })
    });
    let mut untouched = Vec::new();
    let mut problems = Vec::new();
    for (host, version, state) in futures::future::join_all(checks).await {
        match state? {
            DefaultCluster::Absent => {}
            DefaultCluster::Untouched => untouched.push((host, version)),
            DefaultCluster::HasData(what) => problems.push(Problem {
                message: format!("Debian's default cluster {version}/main holds data ({what})"),
                hint: format!("pgstrap never drops a cluster with data: move the data, or drop it yourself with `pg_dropcluster --stop {version} main`"),
                warning: false,
                host,
            }),
        }
    }
    Ok((untouched, problems))
}

async fn close(open: BTreeMap<String, Session>) {
    futures::future::join_all(open.into_values().map(Session::close)).await;
}

/// A cluster whose leader was just started on a restored data directory (`pgstrap restore`):
/// gate on that leader until Patroni has adopted it. The rest is [`converge_cluster`]'s (the
/// other members are created from it, or from the repository).
pub(crate) async fn wait_adopted(
    project: &Project,
    cluster: &Cluster,
    secrets: &Secrets,
    options: &Options,
) -> Result<()> {
    let patroni = Patroni::from_secrets(secrets)?;
    let first = &cluster.postgres[0];
    wait_leading(
        project,
        cluster,
        &patroni,
        first,
        "/primary",
        options.gate_timeout,
        "see `journalctl -u patroni` on that host",
    )
    .await?;
    // Patroni writes the dynamic configuration of a cluster it adopted a moment after it leads
    // (until then GET /config has no JSON body); the convergence below reads it.
    let rest_port = project.port(cluster, crate::project::Port::PatroniRestApi);
    let address = project.address(first);
    wait_for(
        &format!(
            "Patroni on {first} to write cluster {}'s dynamic configuration",
            cluster.name
        ),
        options.gate_timeout,
        Duration::from_millis(500),
        "see `journalctl -u patroni` on that host",
        || async {
            match patroni.get_config(&address, rest_port).await {
                Ok(config) if config.is_object() => Poll::Ready(()),
                Ok(config) => Poll::NotYet(format!("GET /config answered {config}")),
                Err(e) => Poll::NotYet(e.to_string()),
            }
        },
    )
    .await
}

/// Gate: Patroni on `host` leads `cluster` (its REST API answers 200 on `path`: `/primary` or
/// `/standby-leader`).
async fn wait_leading(
    project: &Project,
    cluster: &Cluster,
    patroni: &Patroni,
    host: &str,
    path: &str,
    timeout: Duration,
    hint: &str,
) -> Result<()> {
    let rest_port = project.port(cluster, crate::project::Port::PatroniRestApi);
    let address = project.address(host);
    wait_for(
        &format!(
            "Patroni on {host} to lead cluster {} ({path} → 200)",
            cluster.name
        ),
        timeout,
        Duration::from_secs(1),
        hint,
        || async {
            match patroni.probe(&address, rest_port, path).await {
                Ok(200) => Poll::Ready(()),
                Ok(code) => Poll::NotYet(format!("{path} answered {code}")),
                Err(e) => Poll::NotYet(e),
            }
        },
    )
    .await
}

/// Step 3 of a cluster: gate on its etcd cluster (healthy members and a leader). Returns the
/// endpoints.
async fn wait_etcd(project: &Project, cluster: &Cluster, options: &Options) -> Result<Vec<String>> {
    let endpoints = project.etcd_endpoints(cluster);
    stage(
        options,
        format!(
            "{}: etcd: waiting for {} healthy members and a leader",
            cluster.name,
            cluster.etcd.len()
        ),
    );
    let etcd =
        crate::clients::etcd::wait_healthy(&endpoints, cluster.etcd.len(), options.gate_timeout)
            .await?;
    stage(
        options,
        format!(
            "{}: etcd healthy, leader {}",
            cluster.name,
            etcd.leader.as_deref().unwrap_or("?")
        ),
    );
    Ok(endpoints)
}

/// Gate: a leader, and every other member streaming from it (seen in the leader's
/// pg_stat_replication; Patroni 3.0.2 has no `/replica?replication_state=streaming`). Returns the
/// leader's host name.
async fn wait_streaming(
    project: &Project,
    cluster: &Cluster,
    patroni: &Patroni,
    open: &BTreeMap<String, Session>,
    options: &Options,
) -> Result<String> {
    let members = crate::project::names::member_hosts(project, cluster);
    wait_for(
        &format!("every replica of {} to stream from its leader", cluster.name),
        options.gate_timeout,
        Duration::from_secs(1),
        "see `journalctl -u patroni` on the replicas (pg_basebackup, pg_hba, passwords)",
        || async {
            let Some(view) = patroni.view(project, cluster).await else {
                return Poll::NotYet("no Patroni REST API answers".into());
            };
            let Some(leader) = view.leader() else {
                return Poll::NotYet(format!("no leader yet {}", view.describe()));
            };
            let Some(leader_host) = members.get(&leader.name).cloned() else {
                return Poll::NotYet(format!("leader {} is not in the inventory", leader.name));
            };
            let Some(session) = open.get(&leader_host) else {
                return Poll::NotYet(format!("{leader_host}: not connected"));
            };
            let sql = "SELECT string_agg(application_name || '=' || state, ',') FROM pg_stat_replication;";
            let seen = postgres::psql(session, "postgres", sql, "replication state").await;
            let seen = match seen {
                Ok(text) => text.trim().to_owned(),
                Err(e) => return Poll::NotYet(format!("cannot read pg_stat_replication on {leader_host}: {e}")),
            };
            let streaming: Vec<&str> = seen
                .split(',')
                .filter_map(|e| e.split_once('='))
                .filter(|(_, state)| *state == "streaming")
                .map(|(name, _)| name)
                .collect();
            let missing: Vec<&String> = members.keys().filter(|m| *m != &leader.name && !streaming.contains(&m.as_str())).collect();
            if missing.is_empty() {
                Poll::Ready(leader_host)
            } else {
                Poll::NotYet(format!("leader {}; not streaming yet: {}; pg_stat_replication: [{seen}]", leader.name, missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")))
            }
        },
    )
    .await
}
