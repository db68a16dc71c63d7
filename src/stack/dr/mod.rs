//! The DR lifecycle of a primary cluster and its standby cluster in another datacenter: the
//! roles the running clusters actually have (which `apply` compares with the inventory's
//! `standby_of`, refusing to reverse a promotion on its own), and the planned promotion of the
//! standby side (`pgstrap dr promote`), which is also the fail back.
//!
//! A planned promotion loses no acknowledged write: the old primary side is turned into a standby
//! cluster first (Patroni demotes its leader with a clean shutdown, whose WAL reaches the standby
//! side), the standby side is promoted only once it has replayed the old primary's last position,
//! and the old side then follows the new primary's timeline from where it stopped, through a
//! permanent slot on the new primary side — no rewind, no re-clone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::clients::gate::{wait_for, Poll};
use crate::clients::patroni::Patroni;
use crate::clients::postgres::psql;
use crate::connect::Session;
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::standby_slot;
use crate::inventory::Cluster;
use crate::project::Project;

pub mod emergency;
pub mod fence;
pub mod rebuild;

/// What a running cluster is, from its dynamic configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "of")]
pub enum LiveRole {
    Primary,
    /// A standby cluster of the inventory cluster whose DB hosts its `standby_cluster.host`
    /// names (`None` when those hosts belong to no cluster of the inventory).
    StandbyOf(Option<String>),
}

/// Any member's `GET /config` of `cluster` (`None`: no member answers: not running yet).
async fn live_config(project: &Project, cluster: &Cluster, patroni: &Patroni) -> Option<Value> {
    let port = project.port(cluster, crate::project::Port::PatroniRestApi);
    for host in &cluster.postgres {
        if let Ok(config) = patroni.get_config(&project.address(host), port).await {
            return Some(config);
        }
    }
    None
}

/// The live role of every running cluster.
pub async fn live_roles(project: &Project, patroni: &Patroni) -> BTreeMap<String, LiveRole> {
    let mut roles = BTreeMap::new();
    for cluster in project.inventory.clusters.values() {
        let Some(config) = live_config(project, cluster, patroni).await else {
            continue;
        };
        let role = match config.get("standby_cluster").filter(|v| !v.is_null()) {
            None => LiveRole::Primary,
            Some(standby) => {
                let hosts: Vec<&str> = standby["host"]
                    .as_str()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .collect();
                let of = project.inventory.clusters.values().find(|c| {
                    c.postgres
                        .iter()
                        .any(|h| hosts.contains(&project.address(h).as_str()))
                });
                LiveRole::StandbyOf(of.map(|c| c.name.clone()))
            }
        };
        roles.insert(cluster.name.clone(), role);
    }
    roles
}

/// `apply` never reverses a promotion: when the inventory's `standby_of` and the running roles
/// disagree, refuse (nothing changed) and say which edit matches the running clusters.
pub async fn refuse_role_mismatch(project: &Project, patroni: &Patroni) -> Result<()> {
    let live = live_roles(project, patroni).await;
    let mut problems = Vec::new();
    for cluster in project.inventory.clusters.values() {
        let Some(role) = live.get(&cluster.name) else {
            continue;
        };
        let matches = match (role, &cluster.standby_of) {
            (LiveRole::Primary, None) => true,
            (LiveRole::StandbyOf(Some(of)), Some(wanted)) => of == wanted,
            _ => false,
        };
        if !matches {
            let now = match role {
                LiveRole::Primary => format!("`{}` runs as a primary", cluster.name),
                LiveRole::StandbyOf(Some(of)) => {
                    format!("`{}` runs as a standby cluster of `{of}`", cluster.name)
                }
                LiveRole::StandbyOf(None) => format!(
                    "`{}` runs as a standby of hosts outside the inventory",
                    cluster.name
                ),
            };
            let edit = match role {
                LiveRole::Primary => format!("remove `standby_of` from cluster {}", cluster.name),
                LiveRole::StandbyOf(Some(of)) => {
                    format!("set `standby_of: {of}` on cluster {}", cluster.name)
                }
                LiveRole::StandbyOf(None) => "point `standby_of` at its primary cluster".into(),
            };
            problems.push((now, edit));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let (now, edits): (Vec<String>, Vec<String>) = problems.into_iter().unzip();
    Err(Error::usage(
        format!(
            "the inventory disagrees with the running clusters: {}; apply never reverses a promotion",
            now.join("; ")
        ),
        Some(format!(
            "after `pgstrap dr promote`, edit the inventory to match: {}",
            edits.join("; ")
        )),
    ))
}

/// One step of a promotion and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub seconds: f64,
}

impl Step {
    /// A step that began at `at` and ends now.
    fn since(what: String, at: Instant) -> Self {
        Self {
            what,
            seconds: at.elapsed().as_secs_f64(),
        }
    }
}

/// What `dr promote` did.
#[derive(Debug, Clone, Serialize)]
pub struct PromoteReport {
    pub promoted: String,
    pub demoted: String,
    pub steps: Vec<Step>,
    /// The old primary's last WAL position, which the promoted side replayed before promotion.
    pub last_position: String,
    /// From the old primary's demotion until the new primary's VIP (or leader) takes writes.
    pub seconds_without_writes: f64,
}

/// The pair around `name`: (standby side to promote, its primary side), as the inventory says.
fn pair<'a>(project: &'a Project, name: &str) -> Result<(&'a Cluster, &'a Cluster)> {
    let cluster = project
        .inventory
        .clusters
        .get(name)
        .ok_or_else(|| Error::usage(format!("no cluster `{name}` in the inventory"), None))?;
    let primary = cluster
        .standby_of
        .as_ref()
        .and_then(|p| project.inventory.clusters.get(p))
        .ok_or_else(|| {
            Error::usage(
                format!("cluster `{name}` is not a standby cluster in the inventory (no `standby_of`)"),
                Some("promote the standby side of a DR pair: the cluster whose `standby_of` names the primary side".into()),
            )
        })?;
    Ok((cluster, primary))
}

struct Side<'a> {
    project: &'a Project,
    cluster: &'a Cluster,
    patroni: &'a Patroni,
    secrets: &'a Secrets,
    rest_port: u16,
    /// One SSH connection per host, opened on first use and reused by every poll (dropped after
    /// a failure so the next poll connects again).
    sessions: tokio::sync::Mutex<BTreeMap<String, Session>>,
}

impl<'a> Side<'a> {
    fn new(
        project: &'a Project,
        cluster: &'a Cluster,
        patroni: &'a Patroni,
        secrets: &'a Secrets,
    ) -> Self {
        Self {
            project,
            cluster,
            patroni,
            secrets,
            rest_port: project.port(cluster, crate::project::Port::PatroniRestApi),
            sessions: Default::default(),
        }
    }

    /// The standby leader of this (standby) cluster: the member a promotion promotes.
    async fn standby_leader(&self) -> Result<String> {
        self.answering("/standby-leader").await.ok_or_else(|| {
            Error::failure(
                format!(
                    "cluster {}: no member answers /standby-leader",
                    self.cluster.name
                ),
                Some("`pgstrap status -i INV` shows the standby cluster's state".into()),
            )
        })
    }

    /// The host of the member answering `path` with 200 (`/primary`, `/standby-leader`).
    async fn answering(&self, path: &str) -> Option<String> {
        for host in &self.cluster.postgres {
            if let Ok(200) = self
                .patroni
                .probe(&self.project.address(host), self.rest_port, path)
                .await
            {
                return Some(host.clone());
            }
        }
        None
    }

    async fn wait_answering(&self, path: &str, timeout: Duration) -> Result<String> {
        wait_for(
            &format!("a member of {} answering {path}", self.cluster.name),
            timeout,
            Duration::from_millis(300),
            "see `journalctl -u patroni` on the cluster's DB hosts",
            || async {
                match self.answering(path).await {
                    Some(host) => Poll::Ready(host),
                    None => Poll::NotYet(format!("no member answers {path} yet")),
                }
            },
        )
        .await
    }

    async fn patch(&self, host: &str, change: &Value) -> Result<()> {
        self.patroni
            .patch_config(&self.project.address(host), self.rest_port, change)
            .await
            .map_err(|e| {
                Error::failure(
                    format!("cluster {}: PATCH /config: {e}", self.cluster.name),
                    None,
                )
            })
    }

    async fn sql(&self, host: &str, sql: &str, what: &str) -> Result<String> {
        let mut sessions = self.sessions.lock().await;
        if !sessions.contains_key(host) {
            let session = crate::exec::connect(self.project, host, self.secrets).await?;
            sessions.insert(host.to_owned(), session);
        }
        let session = &sessions[host];
        match psql(session, "postgres", sql, what).await {
            Ok(out) => Ok(out.trim().to_owned()),
            Err(e) => {
                if let Some(session) = sessions.remove(host) {
                    session.close().await;
                }
                Err(e)
            }
        }
    }

    /// Promote: the standby leader's dynamic configuration patched with `change` (no
    /// `standby_cluster`); gate: a member answers `/primary`, which is returned.
    async fn promote(&self, leader: &str, change: &Value) -> Result<String> {
        self.patch(leader, change).await?;
        self.wait_answering("/primary", Duration::from_secs(120))
            .await
    }

    async fn close(self) {
        for session in self.sessions.into_inner().into_values() {
            session.close().await;
        }
    }

    /// `standby_cluster` pointing at `primary`'s DB hosts.
    fn standby_of(&self, primary: &Cluster, slot: Option<String>) -> Value {
        let hosts: Vec<String> = primary
            .postgres
            .iter()
            .map(|h| self.project.address(h))
            .collect();
        let port = self.project.port(primary, crate::project::Port::PostgreSQL);
        let mut standby = json!({
            "host": hosts.join(","),
            "port": port,
            "create_replica_methods": ["basebackup"],
        });
        if let Some(slot) = slot {
            standby["primary_slot_name"] = Value::String(slot);
        }
        standby
    }
}

/// Planned promotion of standby cluster `name` (its primary side answers): demote the primary
/// side into a standby cluster of `name`, wait until `name` replayed its last position, promote
/// `name` with a permanent slot for the old side, and point the old side at that slot.
pub async fn promote(project: &Project, secrets: &Secrets, name: &str) -> Result<PromoteReport> {
    let (standby, primary) = pair(project, name)?;
    let patroni = Patroni::from_secrets(secrets)?;
    let interrupted = resumes(project, &patroni, standby, primary).await?;
    let run = Planned {
        standby,
        primary,
        new: Side::new(project, standby, &patroni, secrets),
        old: Side::new(project, primary, &patroni, secrets),
    };
    let old_leader = if interrupted {
        String::new()
    } else {
        run.old.answering("/primary").await.ok_or_else(|| {
            Error::failure(
                format!("cluster {}: no member answers /primary", primary.name),
                Some(format!("a planned promotion needs the primary side up; when it is gone: `pgstrap dr promote --emergency-may-lose-data --cluster {}`", standby.name)),
            )
        })?
    };
    let new_leader = run.new.standby_leader().await?;
    let mut steps = Vec::new();

    // 1. The old primary side becomes a standby cluster of the new side: writes stop.
    let began = Instant::now();
    let old_standby_leader = run.demote(interrupted, &old_leader).await?;
    steps.push(Step::since(
        format!(
            "{}: demoted to a standby cluster of {} (writes stopped)",
            primary.name, standby.name
        ),
        began,
    ));

    // 2. The new side has replayed everything the old primary wrote.
    let at = Instant::now();
    let last = run.wait_replayed(&old_standby_leader, &new_leader).await?;
    steps.push(Step::since(
        format!(
            "{}: replayed {}'s last position {last}",
            standby.name, primary.name
        ),
        at,
    ));

    // 3. Promote: no standby_cluster, a permanent slot for the old side.
    let at = Instant::now();
    let slot_for_old = standby_slot(&primary.name);
    let promoted_leader = run
        .new
        .promote(
            &new_leader,
            &json!({"standby_cluster": null, "slots": {slot_for_old.clone(): {"type": "physical"}}}),
        )
        .await?;
    steps.push(Step::since(
        format!(
            "{}: promoted ({promoted_leader} is the primary)",
            standby.name
        ),
        at,
    ));

    // 4. Writes land on the new primary (through its VIP when it has one).
    steps.push(writes_land(project, standby, &promoted_leader, secrets).await?);
    let seconds_without_writes = began.elapsed().as_secs_f64();

    // 5. The old side streams through its slot; it no longer keeps one for the new side.
    let at = Instant::now();
    run.follow(&old_standby_leader, &promoted_leader, &slot_for_old)
        .await?;
    steps.push(Step::since(
        format!(
            "{}: streams from {} through slot {slot_for_old}",
            primary.name, standby.name
        ),
        at,
    ));
    run.new.close().await;
    run.old.close().await;
    Ok(PromoteReport {
        promoted: standby.name.clone(),
        demoted: primary.name.clone(),
        steps,
        last_position: last,
        seconds_without_writes,
    })
}

/// Whether a promotion interrupted after the demotion (both sides standby clusters of each other)
/// resumes; anything else must match the inventory (refused when not).
async fn resumes(
    project: &Project,
    patroni: &Patroni,
    standby: &Cluster,
    primary: &Cluster,
) -> Result<bool> {
    let live = live_roles(project, patroni).await;
    let interrupted = live.get(&primary.name)
        == Some(&LiveRole::StandbyOf(Some(standby.name.clone())))
        && live.get(&standby.name) == Some(&LiveRole::StandbyOf(Some(primary.name.clone())));
    if !interrupted {
        refuse_role_mismatch(project, patroni).await?;
    }
    Ok(interrupted)
}

/// The two sides of a planned promotion: `new` (the standby side, promoted) and `old` (the
/// primary side, demoted).
struct Planned<'a> {
    standby: &'a Cluster,
    primary: &'a Cluster,
    new: Side<'a>,
    old: Side<'a>,
}

impl Planned<'_> {
    /// Step 1: the old primary side made a standby cluster of the new side (unless a resumed
    /// promotion did it already). Returns its standby leader.
    async fn demote(&self, interrupted: bool, old_leader: &str) -> Result<String> {
        if !interrupted {
            self.old
                .patch(
                    old_leader,
                    &json!({"standby_cluster": self.old.standby_of(self.standby, None)}),
                )
                .await?;
        }
        self.old
            .wait_answering("/standby-leader", Duration::from_secs(120))
            .await
    }

    /// Step 2: the old side's last WAL position, then gate: the new side replayed it. Returns
    /// that position.
    async fn wait_replayed(&self, old_standby_leader: &str, new_leader: &str) -> Result<String> {
        let (old, new, primary) = (&self.old, &self.new, self.primary);
        // Its PostgreSQL answers a moment after Patroni reports it standby leader.
        let last = wait_for(
            &format!("{}'s last WAL position", primary.name),
            Duration::from_secs(120),
            Duration::from_millis(500),
            "see `journalctl -u patroni` on the old primary side's standby leader",
            || async {
                match old
                    .sql(
                        old_standby_leader,
                        "SELECT pg_last_wal_replay_lsn()",
                        "the old primary's last position",
                    )
                    .await
                {
                    Ok(lsn) if !lsn.is_empty() => Poll::Ready(lsn),
                    Ok(_) => Poll::NotYet("no position yet".into()),
                    Err(e) => Poll::NotYet(e.to_string()),
                }
            },
        )
        .await?;
        if last.is_empty() {
            return Err(Error::failure(
                format!(
                    "cluster {}: cannot read its last WAL position",
                    primary.name
                ),
                None,
            ));
        }
        wait_for(
            &format!(
                "{} to replay {}'s last position {last}",
                self.standby.name, primary.name
            ),
            Duration::from_secs(300),
            Duration::from_millis(300),
            "the standby cluster must stream from the primary side: see `pgstrap status -i INV`",
            || async {
                match new
                    .sql(
                        new_leader,
                        &format!("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{last}') >= 0"),
                        "replayed the old primary's last position",
                    )
                    .await
                {
                    Ok(t) if t == "t" => Poll::Ready(()),
                    Ok(_) => Poll::NotYet("behind".into()),
                    Err(e) => Poll::NotYet(e.to_string()),
                }
            },
        )
        .await?;
        Ok(last)
    }

    /// Step 5: the old side pointed at its slot on the new primary (and no longer keeping one for
    /// the new side); gate: that slot is active.
    async fn follow(
        &self,
        old_standby_leader: &str,
        promoted_leader: &str,
        slot_for_old: &str,
    ) -> Result<()> {
        let (old, new, standby) = (&self.old, &self.new, self.standby);
        old.patch(
            old_standby_leader,
            &json!({
                "standby_cluster": old.standby_of(standby, Some(slot_for_old.to_owned())),
                "slots": {standby_slot(&standby.name): null},
            }),
        )
        .await?;
        wait_for(
            &format!("{} to stream from {} through slot {slot_for_old}", self.primary.name, standby.name),
            Duration::from_secs(180),
            Duration::from_secs(1),
            "see `journalctl -u patroni` on the old primary side's standby leader",
            || async {
                match new
                    .sql(
                        promoted_leader,
                        &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot_for_old}'"),
                        "slot active",
                    )
                    .await
                {
                    Ok(t) if t == "t" => Poll::Ready(()),
                    Ok(t) => Poll::NotYet(format!("slot {slot_for_old}: {}", if t.is_empty() { "not there yet" } else { "not active yet" })),
                    Err(e) => Poll::NotYet(e.to_string()),
                }
            },
        )
        .await
    }
}

/// The promotions' step: wait until writes through `cluster`'s VIP (or, without one, its new
/// leader's PgBouncer) land on a primary.
async fn writes_land(
    project: &Project,
    cluster: &Cluster,
    leader: &str,
    secrets: &Secrets,
) -> Result<Step> {
    let at = Instant::now();
    let (address, port) = match cluster.vip {
        Some(vip) => (
            vip.addr().to_string(),
            project.port(cluster, crate::project::Port::HaproxyWrite),
        ),
        None => (
            project.address(leader),
            project.port(cluster, crate::project::Port::PgBouncer),
        ),
    };
    wait_for(
        &format!("writes through {address}:{port} to reach the new primary"),
        Duration::from_secs(60),
        Duration::from_millis(300),
        "check HAProxy and keepalived on the new primary side's balancers",
        || async {
            match super::verify::connect(&address, port, secrets).await {
                Ok(client) => {
                    match super::verify::scalar(&client, "SELECT pg_is_in_recovery()").await {
                        Ok(Some(v)) if v == "f" => Poll::Ready(()),
                        Ok(_) => Poll::NotYet("reached a server in recovery".into()),
                        Err(e) => Poll::NotYet(e),
                    }
                }
                Err(e) => Poll::NotYet(e),
            }
        },
    )
    .await?;
    Ok(Step::since(
        format!(
            "{}: writes through {address}:{port} land on the new primary",
            cluster.name
        ),
        at,
    ))
}
