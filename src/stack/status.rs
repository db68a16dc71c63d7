//! `pgstrap status`: one view of the running stack, from the real components' own interfaces —
//! etcd members (API), Patroni members (REST) with each replica's replay lag from the leader's
//! `pg_stat_replication` (as `verify` measures it), PgBouncer (a query), HAProxy backends (its
//! stats CSV) and the host holding the VIP. `status --json` is a versioned shape, documented in
//! README.md.

use std::collections::BTreeMap;

use serde::Serialize;

use super::verify::{self, Replication};
use crate::clients::etcd::{self, EtcdHealth};
use crate::clients::patroni::{Member, Patroni};
use crate::connect::{RemoteCommand, Session};
use crate::inventory::secrets::{Secret, Secrets};
use crate::inventory::Cluster;
use crate::project::Project;

/// The version of `status --json`'s shape (README.md, "`status --json`"). Fields may be added
/// within a version; renaming, removing or changing the meaning of one bumps it.
pub const JSON_VERSION: u32 = 1;

/// What `pgstrap status` shows; serialized as is by `status --json` (documented in README.md).
#[derive(Debug, Serialize)]
pub struct Status {
    /// [`JSON_VERSION`].
    pub version: u32,
    pub clusters: Vec<ClusterStatus>,
    /// Every host: its Debian release and the versions of the stack's packages on it.
    pub hosts: Vec<HostInfo>,
}

/// One host's release and the stack's package versions (`dpkg-query`, over SSH).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    /// `VERSION_ID` of `/etc/os-release` (`"13"`); `None` when the host did not answer.
    pub release: Option<String>,
    /// Installed version by package (`patroni`, `etcd-server`, `postgresql-17`, `pgbouncer`,
    /// `haproxy`, `keepalived`); packages that are not installed are left out.
    pub packages: BTreeMap<String, String>,
    /// Why the host could not be asked; `None` otherwise.
    pub error: Option<String>,
}

/// The script behind [`HostInfo`]: the release (the facts' own sections,
/// `facts::host_sections`), then `package=version` lines in a `packages` section.
fn host_info_script() -> String {
    format!(
        "{}{}{PACKAGE_VERSIONS}",
        crate::facts::host_sections(),
        crate::facts::section_mark("packages")
    )
}

/// The installed versions of the stack's packages, as `package=version` lines.
const PACKAGE_VERSIONS: &str = r#"dpkg-query -W -f='${Package} ${db:Status-Abbrev} ${Version}\n' 'postgresql-[0-9]*' patroni etcd-server pgbouncer haproxy keepalived 2>/dev/null | awk '$2 == "ii" && $1 !~ /-(client|contrib|doc)-/ {print $1 "=" $3}'
"#;

/// Parse [`host_info_script`]'s output (pure; tested on captured output).
pub fn parse_host_info(name: &str, text: &str) -> HostInfo {
    let sections = crate::facts::sections(text);
    let release = crate::facts::os_release_of(text).version_id;
    let mut info = HostInfo {
        name: name.to_owned(),
        release: (!release.is_empty()).then_some(release),
        packages: BTreeMap::new(),
        error: None,
    };
    for line in sections.get("packages").map_or("", String::as_str).lines() {
        if let Some((package, version)) = line.split_once('=') {
            info.packages.insert(package.to_owned(), version.to_owned());
        }
    }
    info
}

/// Every host of the inventory, in inventory order, over the view's sessions (`error`: why a
/// host could not be asked).
async fn host_infos(project: &Project, hosts: &Hosts) -> Vec<HostInfo> {
    let (sessions, unreachable) = hosts;
    let command = RemoteCommand::stdin_script(host_info_script(), "release and package versions");
    let unanswered = |name: &str, error: String| HostInfo {
        name: name.to_owned(),
        release: None,
        packages: BTreeMap::new(),
        error: Some(error),
    };
    let asks = project.inventory.hosts.keys().map(|name| {
        let command = &command;
        async move {
            let Some(session) = sessions.get(name) else {
                let error = unreachable
                    .iter()
                    .find(|(host, _)| host == name)
                    .map_or_else(|| "not connected".to_owned(), |(_, e)| e.to_string());
                return unanswered(name, error);
            };
            match session.output(command).await {
                Ok(output) => parse_host_info(name, &output.stdout_text()),
                Err(e) => unanswered(name, e.to_string()),
            }
        }
    });
    futures::future::join_all(asks).await
}

/// The view's sessions, one per inventory host (opened once through the engine's door, used for
/// the VIP's holders and every host's release), and the hosts that could not be reached.
type Hosts = (
    BTreeMap<String, Session>,
    Vec<(String, crate::connect::ConnectError)>,
);

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    /// The primary cluster this one is a DR standby of.
    pub standby_of: Option<String>,
    /// What the running cluster is (`{"role": "primary"}` or `{"role": "standby_of", "of":
    /// NAME}`), from its dynamic configuration; `null` when no member answers.
    pub live_role: Option<crate::stack::dr::LiveRole>,
    /// The fence on this cluster after an emergency promotion of another cluster of its DR pair
    /// (`dr promote --emergency-may-lose-data`): its hosts do not start Patroni; `null` when not fenced.
    pub fence: Option<crate::stack::dr::fence::Fence>,
    /// For a standby cluster: how far its standby leader's replay is behind the primary side, in
    /// bytes and seconds (`pg_stat_replication` there); `null` when unknown.
    pub standby_lag_bytes: Option<u64>,
    pub standby_lag_seconds: Option<f64>,
    pub etcd: EtcdStatus,
    pub patroni: PatroniStatus,
    pub pgbouncer: Vec<Probe>,
    pub haproxy: Vec<Backend>,
    pub vip: Option<VipStatus>,
    /// The cluster's backups (`null`: it has none configured).
    pub backup: Option<crate::stack::backup::BackupStatus>,
    /// A restore target (`restore_of`) not restored yet: the cluster it waits for.
    pub waits_for_restore: Option<String>,
}

/// The cluster's etcd, from its API.
impl Status {
    /// Every cluster's problems, each as `cluster: what` (empty: every cluster is healthy).
    pub fn problems(&self) -> Vec<String> {
        self.clusters
            .iter()
            .flat_map(|c| {
                c.problems()
                    .into_iter()
                    .map(move |p| format!("{}: {p}", c.name))
            })
            .collect()
    }
}

/// Where one balancer's HAProxy sends connections: the members its write proxy (`primary`) and
/// its read proxy (`replicas`) have UP, or that its stats did not answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub writes: Vec<String>,
    pub reads: Vec<String>,
    pub unreachable: bool,
}

impl ClusterStatus {
    /// The balancers HAProxy's stats were asked, in order.
    pub fn balancers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for backend in &self.haproxy {
            if !names.contains(&backend.balancer) {
                names.push(backend.balancer.clone());
            }
        }
        names
    }

    /// Where `balancer` sends writes and reads.
    pub fn route(&self, balancer: &str) -> Route {
        let mut route = Route::default();
        for backend in self.haproxy.iter().filter(|b| b.balancer == balancer) {
            match (backend.proxy.as_str(), backend.status.as_str()) {
                (_, "UNREACHABLE") => route.unreachable = true,
                ("primary", status) if status.starts_with("UP") => {
                    route.writes.push(backend.server.clone())
                }
                ("replicas", status) if status.starts_with("UP") => {
                    route.reads.push(backend.server.clone())
                }
                _ => {}
            }
        }
        route
    }

    /// The member HAProxy's write port must send to: the leader of a primary cluster, none for
    /// a standby cluster (its standby leader is read-only); `None` when not known (no leader).
    pub fn expected_writer(&self) -> Option<Option<String>> {
        let leader = self.patroni.members.iter().find(|m| m.leads())?;
        Some((leader.role == "leader").then(|| leader.name.clone()))
    }

    /// What is not as a healthy cluster has it: etcd without quorum health or a leader, Patroni
    /// without a running leader or with a replica not streaming, a PgBouncer that does not
    /// answer, a VIP held by no balancer or by several, a fence.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let etcd_only = self.waits_for_restore.is_some();
        if let Some(error) = &self.etcd.error {
            problems.push(format!("etcd: {error}"));
        } else {
            for member in self.etcd.members.iter().filter(|m| !m.healthy) {
                problems.push(format!("etcd member {} unhealthy", member.name));
            }
            if self.etcd.leader.is_none() {
                problems.push("etcd has no leader".into());
            }
        }
        if etcd_only {
            // Nothing runs there but etcd until `pgstrap restore --into` creates the cluster.
            return problems;
        }
        if let Some(error) = &self.patroni.error {
            problems.push(format!("patroni: {error}"));
        } else {
            let leaders = self
                .patroni
                .members
                .iter()
                .filter(|m| {
                    // A standby leader streams from the primary side (Patroni 4 says so).
                    m.leads() && (m.state == "running" || m.state == "streaming")
                })
                .count();
            if leaders != 1 {
                problems.push(format!("{leaders} running Patroni leaders (one expected)"));
            }
            for member in &self.patroni.members {
                if !member.leads() && !member.streams() {
                    problems.push(format!(
                        "replica {} is {}, not streaming",
                        member.name, member.state
                    ));
                }
            }
        }
        for probe in self.pgbouncer.iter().filter(|p| !p.ok) {
            problems.push(format!("pgbouncer on {}: {}", probe.host, probe.detail));
        }
        let writer = self.expected_writer();
        for balancer in self.balancers() {
            let route = self.route(&balancer);
            if route.unreachable {
                problems.push(format!("haproxy on {balancer}: its stats do not answer"));
            } else if let Some(expected) = &writer {
                if route.writes.first() != expected.as_ref() || route.writes.len() > 1 {
                    problems.push(format!(
                        "haproxy on {balancer} sends writes to {} (expected: {})",
                        if route.writes.is_empty() {
                            "no member".to_owned()
                        } else {
                            route.writes.join(", ")
                        },
                        expected
                            .as_deref()
                            .unwrap_or("no member, a standby cluster")
                    ));
                }
            }
        }
        if let Some(vip) = &self.vip {
            if vip.holders.len() != 1 {
                problems.push(format!(
                    "VIP {} held by {} balancers ({})",
                    vip.address,
                    vip.holders.len(),
                    vip.holders.join(", ")
                ));
            }
        }
        if let Some(fence) = &self.fence {
            problems.push(format!("fenced by {}'s emergency promotion", fence.by));
        }
        if let Some(backup) = &self.backup {
            problems.extend(backup.problems());
        }
        problems
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct EtcdStatus {
    /// Why no member could be asked (then `members` is empty); `None` when the API answered.
    pub error: Option<String>,
    /// The name of the leader member, if there is one.
    pub leader: Option<String>,
    pub members: Vec<crate::clients::etcd::EtcdMember>,
}

impl EtcdStatus {
    fn from_health(health: Result<EtcdHealth, String>) -> Self {
        match health {
            Ok(health) => Self {
                error: None,
                leader: health.leader,
                members: health.members,
            },
            Err(error) => Self {
                error: Some(error),
                leader: None,
                members: vec![],
            },
        }
    }
}

/// The cluster's Patroni members (REST API `GET /cluster`), with each replica's replication as
/// the leader's `pg_stat_replication` shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PatroniStatus {
    /// Why no member's REST API answered (then `members` is empty); `None` otherwise.
    pub error: Option<String>,
    /// Why the leader's `pg_stat_replication` could not be read (then every replica's
    /// `replication_state` and `lag_bytes` are `None`); `None` otherwise.
    pub replication_error: Option<String>,
    pub members: Vec<MemberStatus>,
    /// Maintenance mode (`pgstrap pause`): Patroni does not fail over on its own.
    pub paused: bool,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    /// The address PostgreSQL listens on.
    pub host: Option<String>,
    /// `leader`, `standby_leader` or `replica`.
    pub role: String,
    /// Patroni's state: `running`, `streaming`, `starting`, `stopped`…
    pub state: String,
    pub timeline: Option<u64>,
    /// A replica's state in the leader's `pg_stat_replication` (`streaming`, `catchup`…);
    /// `None` for the leader and for a replica that is not in it.
    pub replication_state: Option<String>,
    /// Bytes of WAL a replica has still to replay, measured live in the leader's
    /// `pg_stat_replication` (what `pgstrap verify` checks); `None` for the leader or when
    /// unknown. Not Patroni's `lag`, which comes from WAL positions last written to etcd.
    pub lag_bytes: Option<u64>,
    /// How far behind its replay is in time (PostgreSQL's `replay_lag`), in milliseconds; `None`
    /// for the leader, or while PostgreSQL does not know (an idle primary sends nothing to time).
    pub lag_ms: Option<u64>,
    /// A parameter changed that takes effect only at a restart (`pgstrap restart --pending`).
    pub pending_restart: bool,
    /// The member's Patroni tags.
    pub tags: BTreeMap<String, serde_json::Value>,
}

impl MemberStatus {
    /// The cluster's leader, or a DR standby cluster's standby leader.
    pub fn leads(&self) -> bool {
        self.role == "leader" || self.role == "standby_leader"
    }

    /// A replica streaming, by Patroni's state or the leader's `pg_stat_replication`.
    pub fn streams(&self) -> bool {
        self.state == "streaming" || self.replication_state.as_deref() == Some("streaming")
    }
}

impl PatroniStatus {
    /// Patroni's members, with the replication of each replica from `replication` (the leader's
    /// `pg_stat_replication`, or why it could not be read).
    fn new(
        members: Vec<Member>,
        paused: bool,
        replication: Result<Vec<Replication>, String>,
    ) -> Self {
        let (seen, replication_error) = match replication {
            Ok(seen) => (seen, None),
            Err(error) => (vec![], Some(error)),
        };
        let members = members
            .into_iter()
            .map(|m| {
                let row = seen.iter().find(|r| r.member == m.name && !is_leader(&m));
                MemberStatus {
                    replication_state: row.map(|r| r.state.clone()),
                    lag_bytes: row.and_then(|r| r.replay_lag_bytes),
                    lag_ms: row
                        .and_then(|r| r.replay_lag_seconds)
                        .map(|s| (s * 1000.0).round() as u64),
                    pending_restart: m.pending_restart,
                    tags: m.tags,
                    name: m.name,
                    host: m.host,
                    role: m.role,
                    state: m.state,
                    timeline: m.timeline,
                }
            })
            .collect();
        Self {
            error: None,
            replication_error,
            members,
            paused,
        }
    }

    fn unreachable(error: String) -> Self {
        Self {
            error: Some(error),
            replication_error: None,
            members: vec![],
            paused: false,
        }
    }
}

fn is_leader(member: &Member) -> bool {
    member.role == "leader" || member.role == "standby_leader"
}

/// PgBouncer on one DB host: does it answer a query.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub host: String,
    pub ok: bool,
    /// `answers`, or what went wrong.
    pub detail: String,
}

/// One server line of HAProxy's stats, as seen by one balancer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Backend {
    pub balancer: String,
    pub proxy: String,
    pub server: String,
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct VipStatus {
    pub address: String,
    /// The balancers holding it (one when healthy).
    pub holders: Vec<String>,
}

/// Parse HAProxy's stats CSV (`GET /;csv`): the server lines of every proxy (not FRONTEND/BACKEND).
pub fn parse_haproxy_csv(balancer: &str, text: &str) -> Vec<Backend> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let index = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st)) = (index("pxname"), index("svname"), index("status")) else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let server = *fields.get(sv)?;
            if server == "FRONTEND" || server == "BACKEND" {
                return None;
            }
            Some(Backend {
                balancer: balancer.to_owned(),
                proxy: fields.get(px)?.to_string(),
                server: server.to_owned(),
                status: fields.get(st)?.to_string(),
            })
        })
        .collect()
}

/// Gather the status of every cluster. Never fails on a dead component: it shows as such.
pub async fn status(project: &Project, secrets: &Secrets) -> Status {
    let patroni = Patroni::new(
        secrets
            .get("rest_api_password")
            .cloned()
            .unwrap_or_else(|| Secret::new(String::new())),
    );
    let http = crate::tls::http_client(
        std::time::Duration::from_secs(3),
        std::time::Duration::from_secs(3),
    );
    let live_roles = crate::stack::dr::live_roles(project, &patroni).await;
    let hosts: Hosts = crate::exec::connect_all(
        &crate::exec::targets(project, None),
        &BTreeMap::new(),
        &secrets.masker(),
    )
    .await;
    let gather = Gather {
        project,
        secrets,
        patroni,
        http,
        hosts: &hosts,
    };
    // Clusters are read at once (each read waits on the network, not on this machine); the
    // list keeps the inventory's order.
    let clusters = futures::future::join_all(
        project
            .inventory
            .clusters
            .values()
            .map(|cluster| gather.cluster(cluster, live_roles.get(&cluster.name).cloned())),
    )
    .await;
    let host_infos = host_infos(project, &hosts).await;
    futures::future::join_all(hosts.0.into_values().map(Session::close)).await;
    Status {
        version: JSON_VERSION,
        clusters,
        hosts: host_infos,
    }
}

/// What every cluster's status read shares: the clients and the hosts' sessions.
struct Gather<'a> {
    project: &'a Project,
    secrets: &'a Secrets,
    patroni: Patroni,
    http: reqwest::Client,
    hosts: &'a Hosts,
}

impl Gather<'_> {
    /// One cluster's status: its components read side by side.
    async fn cluster(
        &self,
        cluster: &Cluster,
        live_role: Option<crate::stack::dr::LiveRole>,
    ) -> ClusterStatus {
        let project = self.project;
        let bouncer_port = project.port(cluster, crate::project::Port::PgBouncer);
        let endpoints = project.etcd_endpoints(cluster);
        let (standby_lag, etcd, patroni, waits_for_restore, pgbouncer, haproxy, vip, fence) = tokio::join!(
            self.standby_lag(cluster, live_role.as_ref()),
            etcd::health(&endpoints),
            self.patroni(cluster, bouncer_port),
            self.waits_for_restore(cluster),
            self.pgbouncer(cluster, bouncer_port),
            self.haproxy(cluster),
            self.vip(cluster),
            crate::stack::dr::fence::find(project, cluster),
        );
        let leader_address = patroni
            .members
            .iter()
            .find(|m| m.role == "leader")
            .and_then(|m| m.host.clone());
        let backup = match cluster.standby_of {
            None => {
                crate::stack::backup::status(
                    project,
                    self.secrets,
                    cluster,
                    leader_address.as_deref(),
                    bouncer_port,
                )
                .await
            }
            Some(_) => None,
        };
        ClusterStatus {
            name: cluster.name.clone(),
            standby_of: cluster.standby_of.clone(),
            live_role,
            fence,
            standby_lag_bytes: standby_lag.as_ref().and_then(|l| l.replay_lag_bytes),
            standby_lag_seconds: standby_lag.as_ref().and_then(|l| l.replay_lag_seconds),
            etcd: EtcdStatus::from_health(etcd),
            patroni,
            pgbouncer,
            haproxy,
            vip,
            backup,
            waits_for_restore,
        }
    }

    /// A standby cluster's lag, as its primary side sees it through its VIP (the live role wins
    /// over the inventory: a promoted standby has no primary side).
    async fn standby_lag(
        &self,
        cluster: &Cluster,
        live_role: Option<&crate::stack::dr::LiveRole>,
    ) -> Option<verify::Replication> {
        let project = self.project;
        let primary_side = match live_role {
            Some(crate::stack::dr::LiveRole::StandbyOf(Some(of))) => Some(of.clone()),
            _ => cluster.standby_of.clone(),
        }
        .and_then(|name| project.inventory.clusters.get(&name));
        let (primary, vip) = primary_side.and_then(|p| p.vip.map(|v| (p, v)))?;
        let port = project.port(primary, crate::project::Port::HaproxyWrite);
        verify::standby_lag(
            project,
            cluster,
            &vip.addr().to_string(),
            port,
            self.secrets,
        )
        .await
        .ok()
    }

    /// Patroni's view, with the lag as verify measures it: live, in the leader's
    /// pg_stat_replication.
    async fn patroni(&self, cluster: &Cluster, bouncer_port: u16) -> PatroniStatus {
        let Some(view) = self.patroni.view(self.project, cluster).await else {
            return PatroniStatus::unreachable("no Patroni REST API answered".to_owned());
        };
        let replication = match view.leader().and_then(|m| m.host.clone()) {
            Some(leader) => verify::replication(&leader, bouncer_port, self.secrets)
                .await
                .map_err(|e| format!("the leader's pg_stat_replication: {e}")),
            None => Err("no leader".to_owned()),
        };
        PatroniStatus::new(view.members, view.pause, replication)
    }

    /// The cluster a restore target waits for (`restore_of`), while it has not started.
    async fn waits_for_restore(&self, cluster: &Cluster) -> Option<String> {
        let source = cluster.restore_of.as_ref()?;
        matches!(
            crate::clients::patroni::initialized(self.project, cluster).await,
            Ok(None)
        )
        .then(|| source.clone())
    }

    /// Whether each DB host's PgBouncer answers a query.
    async fn pgbouncer(&self, cluster: &Cluster, port: u16) -> Vec<Probe> {
        let probes = cluster.postgres.iter().map(|host| async move {
            let result =
                match verify::connect(&self.project.address(host), port, self.secrets).await {
                    Ok(client) => verify::scalar(&client, "SELECT 1")
                        .await
                        .map(|_| "answers".to_owned()),
                    Err(e) => Err(e),
                };
            Probe {
                host: host.clone(),
                ok: result.is_ok(),
                detail: result.unwrap_or_else(|e| e),
            }
        });
        futures::future::join_all(probes).await
    }

    /// Every balancer's backends, from its stats page (`UNREACHABLE` when it does not answer).
    async fn haproxy(&self, cluster: &Cluster) -> Vec<Backend> {
        let stats_port = self
            .project
            .port(cluster, crate::project::Port::HaproxyStats);
        let reads = cluster.balancers.iter().map(|balancer| async move {
            let url = format!(
                "http://{}:{stats_port}/;csv",
                self.project.address(balancer)
            );
            match self.http.get(&url).send().await {
                Ok(response) => {
                    let text = response.text().await.unwrap_or_default();
                    parse_haproxy_csv(balancer, &text)
                }
                Err(_) => vec![Backend {
                    balancer: balancer.clone(),
                    proxy: "-".into(),
                    server: "-".into(),
                    status: "UNREACHABLE".into(),
                }],
            }
        });
        futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The VIP and the balancers holding it.
    async fn vip(&self, cluster: &Cluster) -> Option<VipStatus> {
        let address = cluster.vip?.addr().to_string();
        let holders = vip_holders(cluster, &address, &self.hosts.0).await;
        Some(VipStatus { address, holders })
    }
}

/// Which balancers have the VIP on an interface (`ip -o -4 addr`), over the view's sessions.
async fn vip_holders(
    cluster: &Cluster,
    vip: &str,
    sessions: &BTreeMap<String, Session>,
) -> Vec<String> {
    let checks = cluster
        .balancers
        .iter()
        .filter_map(|name| sessions.get(name).map(|session| (name, session)))
        .map(|(name, session)| async move {
            let output = session
                .output(&RemoteCommand::new(&["ip", "-o", "-4", "addr", "show"]))
                .await
                .ok()?;
            output
                .stdout_text()
                .split_whitespace()
                .any(|word| word.split('/').next() == Some(vip))
                .then(|| name.clone())
        });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A status of one cluster as a test sees it (members n1 leader, n2 streaming, n3 not in
/// `pg_stat_replication`; etcd unreachable; one balancer), for the tests of the text too.
#[cfg(test)]
pub(crate) fn example() -> Status {
    tests::example()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_status(name: &str, role: &str, state: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            host: None,
            role: role.into(),
            state: state.into(),
            timeline: Some(1),
            replication_state: None,
            lag_bytes: Some(0),
            lag_ms: None,
            pending_restart: false,
            tags: BTreeMap::new(),
        }
    }

    fn cluster(members: Vec<MemberStatus>, holders: &[&str]) -> ClusterStatus {
        ClusterStatus {
            name: "main".into(),
            standby_of: None,
            live_role: None,
            fence: None,
            standby_lag_bytes: None,
            standby_lag_seconds: None,
            etcd: EtcdStatus {
                error: None,
                leader: Some("n1".into()),
                members: vec![],
            },
            patroni: PatroniStatus {
                error: None,
                replication_error: None,
                members,
                paused: false,
            },
            pgbouncer: vec![],
            haproxy: vec![],
            vip: Some(VipStatus {
                address: "10.0.0.100".into(),
                holders: holders.iter().map(|h| (*h).to_owned()).collect(),
            }),
            backup: None,
            waits_for_restore: None,
        }
    }

    #[test]
    fn a_healthy_cluster_has_no_problem_and_a_degraded_one_says_why() {
        let healthy = cluster(
            vec![
                member_status("n1", "leader", "running"),
                member_status("n2", "replica", "streaming"),
            ],
            &["n4"],
        );
        assert!(healthy.problems().is_empty(), "{:?}", healthy.problems());
        let degraded = cluster(
            vec![
                member_status("n1", "leader", "running"),
                member_status("n2", "replica", "starting"),
            ],
            &["n4", "n5"],
        );
        let problems = degraded.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("replica n2 is starting")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("held by 2 balancers")),
            "{problems:?}"
        );
        let leaderless = cluster(vec![member_status("n2", "replica", "streaming")], &["n4"]);
        assert!(leaderless.problems()[0].contains("0 running Patroni leaders"));
    }

    fn backend(balancer: &str, proxy: &str, server: &str, status: &str) -> Backend {
        Backend {
            balancer: balancer.into(),
            proxy: proxy.into(),
            server: server.into(),
            status: status.into(),
        }
    }

    #[test]
    fn haproxy_must_send_writes_to_the_leader_and_none_on_a_standby_cluster() {
        let members = || {
            vec![
                member_status("n1", "leader", "running"),
                member_status("n2", "replica", "streaming"),
            ]
        };
        let mut healthy = cluster(members(), &["n4"]);
        healthy.haproxy = vec![
            backend("n4", "primary", "n1", "UP"),
            backend("n4", "primary", "n2", "DOWN"),
            backend("n4", "replicas", "n1", "DOWN"),
            backend("n4", "replicas", "n2", "UP"),
        ];
        assert!(healthy.problems().is_empty(), "{:?}", healthy.problems());
        let mut stale = cluster(members(), &["n4"]);
        stale.haproxy = vec![
            backend("n4", "primary", "n2", "UP"),
            backend("n5", "-", "-", "UNREACHABLE"),
        ];
        let problems = stale.problems();
        assert!(
            problems
                .iter()
                .any(|p| p == "haproxy on n4 sends writes to n2 (expected: n1)"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("n5: its stats do not answer")),
            "{problems:?}"
        );
        let mut standby = cluster(
            vec![
                member_status("d1", "standby_leader", "streaming"),
                member_status("d2", "replica", "streaming"),
            ],
            &["d4"],
        );
        standby.haproxy = vec![
            backend("d4", "primary", "d1", "DOWN"),
            backend("d4", "replicas", "d2", "UP"),
        ];
        assert!(standby.problems().is_empty(), "{:?}", standby.problems());
    }

    #[test]
    fn host_info_parses_captured_output() {
        // Captured from a Debian 13 lab host with the whole stack.
        let info = parse_host_info(
            "n1",
            "@@pgstrap os\nID=debian\nVERSION_ID=\"13\"\n@@pgstrap container\nsystemd-nspawn\n@@pgstrap packages\netcd-server=3.5.16-4+b5\nhaproxy=3.0.11-1+deb13u1\npatroni=4.0.7-1\npgbouncer=1.24.1-1\npostgresql-17=17.6-0+deb13u1\n",
        );
        assert_eq!(info.release.as_deref(), Some("13"));
        assert_eq!(
            info.packages.get("patroni").map(String::as_str),
            Some("4.0.7-1")
        );
        assert_eq!(info.packages.len(), 5);
    }

    /// Captured (trimmed to the first columns) from HAProxy 2.6's `GET /;csv`.
    const CSV: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\nstats,FRONTEND,,,0,1,4096,1,0,0,0,0,0,,,,,OPEN,\nprimary,FRONTEND,,,0,0,4096,0,0,0,0,0,0,,,,,OPEN,\nprimary,n1,0,0,0,0,1000,0,0,0,,0,,0,0,0,0,UP,1\nprimary,n2,0,0,0,0,1000,0,0,0,,0,,0,0,0,0,DOWN,1\nprimary,BACKEND,0,0,0,0,410,0,0,0,0,0,,0,0,0,0,UP,1\n";

    fn member(name: &str, role: &str, state: &str, lag: serde_json::Value) -> Member {
        serde_json::from_value(serde_json::json!({
            "name": name, "role": role, "state": state, "host": format!("10.0.0.{}", &name[1..]),
            "timeline": 1, "lag": lag,
        }))
        .unwrap()
    }

    pub(super) fn example() -> Status {
        let members = vec![
            member("n1", "leader", "running", serde_json::Value::Null),
            member("n2", "replica", "streaming", 16777216.into()),
            member("n3", "replica", "running", "unknown".into()),
        ];
        let replication = vec![Replication {
            member: "n2".into(),
            state: "streaming".into(),
            replay_lag_bytes: Some(0),
            replay_lag_seconds: None,
        }];
        Status {
            version: JSON_VERSION,
            clusters: vec![ClusterStatus {
                name: "main".into(),
                standby_of: None,
                live_role: Some(crate::stack::dr::LiveRole::Primary),
                fence: None,
                standby_lag_bytes: None,
                standby_lag_seconds: None,
                etcd: EtcdStatus::from_health(Err("no member answered".into())),
                patroni: PatroniStatus::new(members, false, Ok(replication)),
                pgbouncer: vec![Probe {
                    host: "n1".into(),
                    ok: true,
                    detail: "answers".into(),
                }],
                haproxy: parse_haproxy_csv("lb1", CSV),
                vip: Some(VipStatus {
                    address: "10.0.0.100".into(),
                    holders: vec!["lb1".into()],
                }),
                backup: None,
                waits_for_restore: None,
            }],
            hosts: vec![],
        }
    }

    /// Guards issue 7: `status --json` serialized Rust's `Result` (`{"Ok": …}`). The shape is
    /// documented in README.md; changing this test means changing the documentation and, for
    /// anything but an added field, `JSON_VERSION`.
    #[test]
    fn status_json_has_the_documented_shape() {
        let json = serde_json::to_value(example()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "hosts": [],
                "clusters": [{
                    "name": "main",
                    "standby_of": null,
                    "live_role": {"role": "primary"},
                    "fence": null,
                    "standby_lag_bytes": null,
                    "standby_lag_seconds": null,
                    "etcd": {"error": "no member answered", "leader": null, "members": []},
                    "patroni": {
                        "error": null,
                        "replication_error": null,
                        "members": [
                            {"name": "n1", "host": "10.0.0.1", "role": "leader", "state": "running",
                             "timeline": 1, "replication_state": null, "lag_bytes": null,
                             "lag_ms": null, "pending_restart": false, "tags": {}},
                            {"name": "n2", "host": "10.0.0.2", "role": "replica", "state": "streaming",
                             "timeline": 1, "replication_state": "streaming", "lag_bytes": 0,
                             "lag_ms": null, "pending_restart": false, "tags": {}},
                            {"name": "n3", "host": "10.0.0.3", "role": "replica", "state": "running",
                             "timeline": 1, "replication_state": null, "lag_bytes": null,
                             "lag_ms": null, "pending_restart": false, "tags": {}},
                        ],
                        "paused": false,
                    },
                    "pgbouncer": [{"host": "n1", "ok": true, "detail": "answers"}],
                    "haproxy": [
                        {"balancer": "lb1", "proxy": "primary", "server": "n1", "status": "UP"},
                        {"balancer": "lb1", "proxy": "primary", "server": "n2", "status": "DOWN"},
                    ],
                    "vip": {"address": "10.0.0.100", "holders": ["lb1"]},
                    "backup": null,
                    "waits_for_restore": null,
                }],
            })
        );
    }

    #[test]
    fn replication_that_cannot_be_read_is_said_once() {
        let members = vec![
            member("n1", "leader", "running", serde_json::Value::Null),
            member("n2", "replica", "streaming", 0.into()),
        ];
        let patroni = PatroniStatus::new(members, false, Err("connection refused".into()));
        assert_eq!(
            patroni.replication_error.as_deref(),
            Some("connection refused")
        );
        assert!(patroni.members.iter().all(|m| m.lag_bytes.is_none()));
    }

    #[test]
    fn parses_haproxy_stats() {
        let backends = parse_haproxy_csv("lb1", CSV);
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0].server, "n1");
        assert_eq!(backends[0].status, "UP");
        assert_eq!(backends[1].status, "DOWN");
    }
}
