//! `pgstrap update`: Debian's updates (point releases, security) on every host of the stack,
//! planned first and applied in an order that costs at most one switchover per cluster.
//!
//! The plan: on every host at once, `apt-get update` and a simulated `apt-get upgrade`, mapped
//! onto the roles whose packages change (so onto the services that must restart). The run, one
//! host at a time:
//!
//! 1. hosts that are neither DB nor etcd hosts (balancers, repositories), the VIP holder last,
//!    so the VIP moves at most once (to a balancer already updated);
//! 2. etcd-only hosts, the etcd leader last (leadership moved away before its restart);
//! 3. per cluster, the replicas one at a time (drained from the read port first, back and
//!    streaming before the next), a switchover to an updated replica, the former primary last.
//!
//! On each host the packages are upgraded with every service start held back (a temporary
//! `policy-rc.d`: Debian's maintainer scripts restart services on upgrade, and a Patroni restart
//! on the primary is a failover), then pgstrap restarts what changed, in the stack's order
//! (etcd, pgBackRest, PgBouncer, PostgreSQL through Patroni, HAProxy by a seamless reload,
//! keepalived), each behind its gate. The restarts still owed are written on the host first
//! (`/var/lib/pgstrap/update-restarts`) and removed after them, so a run that stopped (a failed
//! package, a gate) resumes where it stopped.
//!
//! With `--reboot`, a host that needs a reboot (`/var/run/reboot-required`, before or after its
//! upgrade) is rebooted instead of having its services restarted, at the same place in the same
//! order: the primary switched away first, the replica drained, etcd's leadership moved away;
//! back when its boot id changed, etcd healthy, the replica streaming and serving, HAProxy and
//! the VIP answering.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::project::Project;

/// The restarts still owed on a host (written before the upgrade, removed after the restarts).
const OWED: &str = "/var/lib/pgstrap/update-restarts";

/// What a changed package means on a host, in the order the restarts are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    Etcd,
    Pgbackrest,
    Pgbouncer,
    /// PostgreSQL's binaries: a restart through Patroni.
    Postgresql,
    /// Patroni itself: its service restarts (and PostgreSQL with it).
    Patroni,
    Haproxy,
    Keepalived,
}

impl Restart {
    fn name(self) -> &'static str {
        match self {
            Restart::Etcd => "etcd",
            Restart::Pgbackrest => "pgbackrest",
            Restart::Pgbouncer => "pgbouncer",
            Restart::Postgresql => "postgresql",
            Restart::Patroni => "patroni",
            Restart::Haproxy => "haproxy",
            Restart::Keepalived => "keepalived",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "etcd" => Restart::Etcd,
            "pgbackrest" => Restart::Pgbackrest,
            "pgbouncer" => Restart::Pgbouncer,
            "postgresql" => Restart::Postgresql,
            "patroni" => Restart::Patroni,
            "haproxy" => Restart::Haproxy,
            "keepalived" => Restart::Keepalived,
            _ => return None,
        })
    }

    /// Whether this restart on the primary's host needs a switchover first.
    fn moves_the_primary(self) -> bool {
        matches!(
            self,
            Restart::Postgresql | Restart::Patroni | Restart::Pgbouncer
        )
    }

    /// The restart a role's changed package asks for (`None`: nothing of the stack restarts).
    fn of_role(role: &str) -> Option<Self> {
        Self::parse(role)
    }
}

/// One package that `apt-get upgrade` would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    pub package: String,
    pub from: String,
    pub to: String,
}

/// `Inst NAME [OLD] (NEW SUITE [ARCH])` lines of `apt-get -s upgrade`; new installs (no old
/// version) are left out.
pub fn parse_simulation(text: &str) -> Vec<Upgrade> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "Inst" {
                return None;
            }
            let package = words.next()?.to_owned();
            let from = words
                .next()?
                .strip_prefix('[')?
                .strip_suffix(']')?
                .to_owned();
            let to = words.next()?.strip_prefix('(')?.to_owned();
            Some(Upgrade { package, from, to })
        })
        .collect()
}

/// One host's part of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct HostUpdate {
    pub host: String,
    pub upgrades: Vec<Upgrade>,
    /// The restarts the upgrades ask for, and those a stopped run still owes.
    pub restarts: Vec<Restart>,
    /// PostgreSQL's minor version change (`17.12-0+deb13u1 → 17.13-0+deb13u1`).
    pub postgresql: Option<(String, String)>,
    /// `/var/run/reboot-required` exists already (rebooted with `--reboot`; its upgrade may
    /// also ask for one).
    pub reboot_required: bool,
}

impl HostUpdate {
    /// Nothing to upgrade or restart (a reboot it needs counts only when reboots are asked for).
    pub fn is_empty(&self, reboot: bool) -> bool {
        self.upgrades.is_empty() && self.restarts.is_empty() && !(reboot && self.reboot_required)
    }
}

#[derive(Debug, Serialize)]
pub struct UpdatePlan {
    /// In the order the run takes them; hosts with nothing to do are left out.
    pub hosts: Vec<HostUpdate>,
    /// Per cluster whose primary's host is in the plan: the switchover it costs.
    pub switchovers: Vec<String>,
    /// Hosts that need it are rebooted (`--reboot`).
    pub reboot: bool,
}

#[derive(Debug, Serialize)]
pub struct UpdateReport {
    pub plan: UpdatePlan,
    /// What was done, in order.
    pub steps: Vec<String>,
    pub seconds: f64,
}

const PLAN_SCRIPT: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
echo '--simulation'
apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep '^Inst ' || true
echo '--owed'
cat /var/lib/pgstrap/update-restarts 2>/dev/null || true
echo '--reboot'
if [ -e /var/run/reboot-required ]; then echo yes; fi
echo '--addresses'
ip -o -4 addr show | awk '{print $4}'
"#;

/// The upgrade with every service start and restart held back (`policy-rc.d` answers 101 to
/// Debian's maintainer scripts; one already there is left alone), the restarts owed written
/// first. `$1`: the owed restarts, one per line.
const UPGRADE_SCRIPT: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive
mkdir -p /var/lib/pgstrap
{ cat /var/lib/pgstrap/update-restarts 2>/dev/null || true; printf '%s\n' "$1"; } | grep . | sort -u > /var/lib/pgstrap/update-restarts.new
mv /var/lib/pgstrap/update-restarts.new /var/lib/pgstrap/update-restarts
created=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# pgstrap update: pgstrap restarts the stack itself, in its order\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  created=1
fi
trap 'if [ "$created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
# A package a stopped run left half-configured is configured first.
# Everything to stderr: a failure shows its last lines (dpkg names the package there).
dpkg --configure -a >&2
apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade >&2
# The stack's services still running code the upgrade replaced (a library: libssl, libc...):
# restarted too, as needrestart would (it is told to leave them to pgstrap). `$2`: the units.
for unit in $2; do
  cg=$(systemctl show -p ControlGroup --value "$unit.service" 2>/dev/null || true)
  [ -n "$cg" ] && [ -r "/sys/fs/cgroup$cg/cgroup.procs" ] || continue
  for pid in $(cat "/sys/fs/cgroup$cg/cgroup.procs"); do
    if grep -qE ' /usr/[^ ]+ \(deleted\)$' "/proc/$pid/maps" 2>/dev/null; then
      echo "$unit" >> /var/lib/pgstrap/update-restarts
      echo "stale $unit"
      break
    fi
  done
done
if [ -e /var/run/reboot-required ]; then echo "reboot-required"; fi
"#;

/// The units checked after an upgrade for processes that still map replaced files.
const STALE_UNITS: [&str; 6] = [
    "etcd",
    "pgbackrest",
    "pgbouncer",
    "patroni",
    "haproxy",
    "keepalived",
];

/// What the run did, told as it goes.
struct Steps<'a> {
    done: Vec<String>,
    on_step: &'a (dyn Fn(&str) + Sync),
}

impl Steps<'_> {
    fn push(&mut self, step: String) {
        (self.on_step)(&step);
        self.done.push(step);
    }
}

/// The connections to the hosts in the plan.
struct Hosts {
    sessions: BTreeMap<String, Session>,
}

impl Hosts {
    fn session(&self, host: &str) -> Result<&Session> {
        self.sessions
            .get(host)
            .ok_or_else(|| Error::failure(format!("{host}: not connected"), None))
    }

    async fn systemctl(&self, host: &str, verb: &str, unit: &str) -> Result<()> {
        self.session(host)?
            .run(&RemoteCommand::new(&["systemctl", verb, unit]))
            .await
            .map(|_| ())
            .map_err(|e| {
                Error::failure(
                    format!("{host}: systemctl {verb} {unit}: {e}"),
                    Some(format!("see `journalctl -u {unit}` on {host}")),
                )
            })
    }
}

/// The hosts in scope: every host of the inventory, or those of `cluster`, or `only`.
fn scope(project: &Project, cluster: Option<&str>, only: &[String]) -> Result<Vec<String>> {
    let inventory = &project.inventory;
    for host in only {
        if !inventory.hosts.contains_key(host) {
            return Err(Error::usage(
                format!("no host `{host}` in the inventory"),
                None,
            ));
        }
    }
    let of_cluster: Option<BTreeSet<String>> = match cluster {
        None => None,
        Some(name) => {
            let c = inventory.clusters.get(name).ok_or_else(|| {
                Error::usage(format!("no cluster `{name}` in the inventory"), None)
            })?;
            Some(
                c.etcd
                    .iter()
                    .chain(&c.postgres)
                    .chain(&c.balancers)
                    .map(String::as_str)
                    .chain(c.repository())
                    .map(str::to_owned)
                    .collect(),
            )
        }
    };
    Ok(inventory
        .hosts
        .keys()
        .filter(|h| only.is_empty() || only.contains(h))
        .filter(|h| of_cluster.as_ref().is_none_or(|set| set.contains(*h)))
        .cloned()
        .collect())
}

/// Plan the update: what changes on each host of the scope, in the order it will be done; with
/// the open sessions and the project that carries the hosts' releases, for the run.
pub async fn plan(
    project: &Project,
    secrets: &Secrets,
    cluster: Option<&str>,
    only: &[String],
    reboot: bool,
) -> Result<(UpdatePlan, BTreeMap<String, Session>, Project)> {
    let hosts = scope(project, cluster, only)?;
    let (sessions, texts) = simulate(project, secrets, &hosts).await?;
    // The roles' packages are those of each host's own release (PostgreSQL 15 on Debian 12).
    let project = &project.with_releases(crate::exec::releases(&sessions).await);
    let desired = crate::render::desired_state(project, secrets, Some(&hosts))?;
    let mut found: BTreeMap<String, (HostUpdate, Vec<String>)> = BTreeMap::new();
    for (host, text) in texts {
        let roles = desired
            .hosts
            .iter()
            .find(|h| h.host == host)
            .map(|h| h.roles.as_slice())
            .unwrap_or_default();
        let found_here = host_update(&host, &text, roles);
        found.insert(host, found_here);
    }
    let order = order(project, &found).await;
    let switchovers = switchovers(project, &order, reboot).await;
    Ok((
        UpdatePlan {
            hosts: order.into_iter().filter(|h| !h.is_empty(reboot)).collect(),
            switchovers,
            reboot,
        },
        sessions,
        project.clone(),
    ))
}

/// On every host at once: connected, `apt-get update` and a simulated upgrade ([`PLAN_SCRIPT`]).
/// Returns the sessions and each host's answer.
async fn simulate(
    project: &Project,
    secrets: &Secrets,
    hosts: &[String],
) -> Result<(BTreeMap<String, Session>, Vec<(String, String)>)> {
    let connects = hosts.iter().map(|host| async move {
        let session = crate::exec::connect(project, host, secrets).await?;
        let output = session
            .run(&RemoteCommand::stdin_script(
                PLAN_SCRIPT.to_owned(),
                "apt-get update; apt-get -s upgrade",
            ))
            .await
            .map_err(|e| {
                Error::failure(
                    format!("{host}: {e}"),
                    Some("apt-get update must reach the host's Debian mirror".into()),
                )
            })?;
        Ok::<_, Error>((host.clone(), session, output.stdout_text()))
    });
    let mut sessions = BTreeMap::new();
    let mut texts = Vec::new();
    for result in futures::future::join_all(connects).await {
        let (host, session, text) = result?;
        sessions.insert(host.clone(), session);
        texts.push((host, text));
    }
    Ok((sessions, texts))
}

/// One host's part of the plan from its [`PLAN_SCRIPT`] answer (`text`) and the roles it has:
/// its upgrades, the restarts they ask for (onto the roles whose packages change) plus those it
/// owes, and its addresses (to find the VIP's holder).
fn host_update(
    host: &str,
    text: &str,
    roles: &[crate::state::RoleState],
) -> (HostUpdate, Vec<String>) {
    let section = |name: &str| -> String {
        text.split(&format!("--{name}\n"))
            .nth(1)
            .map(|rest| rest.split("\n--").next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let upgrades = parse_simulation(&section("simulation"));
    let mut restarts: BTreeSet<Restart> = section("owed")
        .lines()
        .filter_map(|l| Restart::parse(l.trim()))
        .collect();
    for upgrade in &upgrades {
        for role in roles
            .iter()
            .filter(|r| r.packages.contains(&upgrade.package))
        {
            // A role without a service of its own here (pgBackRest without backups)
            // restarts nothing.
            let restart = Restart::of_role(&role.role);
            let runs = role.services.iter().any(|s| {
                matches!(
                    s.state,
                    crate::state::ServiceState::Started | crate::state::ServiceState::Orchestrated
                )
            }) || matches!(restart, Some(Restart::Postgresql));
            if let (Some(restart), true) = (restart, runs) {
                restarts.insert(restart);
            }
        }
    }
    patroni_restarts_postgresql(&mut restarts);
    let postgresql = upgrades
        .iter()
        .find(|u| u.package.starts_with("postgresql-") && u.package[11..].parse::<u32>().is_ok())
        .map(|u| (u.from.clone(), u.to.clone()));
    let update = HostUpdate {
        host: host.to_owned(),
        upgrades,
        restarts: restarts.into_iter().collect(),
        postgresql,
        reboot_required: section("reboot").trim() == "yes",
    };
    let addresses = section("addresses").lines().map(str::to_owned).collect();
    (update, addresses)
}

/// The hosts in the run's order (see the module's comment).
async fn order(
    project: &Project,
    found: &BTreeMap<String, (HostUpdate, Vec<String>)>,
) -> Vec<HostUpdate> {
    let inventory = &project.inventory;
    let db: BTreeSet<&String> = inventory
        .clusters
        .values()
        .flat_map(|c| &c.postgres)
        .collect();
    let etcd: BTreeSet<&String> = inventory.clusters.values().flat_map(|c| &c.etcd).collect();
    let vips: Vec<String> = inventory
        .clusters
        .values()
        .filter_map(|c| c.vip.map(|v| format!("{}/", v.addr())))
        .collect();
    let holds_vip = |host: &str| {
        found.get(host).is_some_and(|(_, addresses)| {
            addresses
                .iter()
                .any(|a| vips.iter().any(|v| a.starts_with(v.as_str())))
        })
    };
    let mut order = Vec::new();
    // 1. Neither DB nor etcd: the VIP holders last.
    let mut others: Vec<&String> = found
        .keys()
        .filter(|h| !db.contains(h) && !etcd.contains(h))
        .collect();
    others.sort_by_key(|h| holds_vip(h));
    order.extend(others);
    // 2. etcd only: the leader last.
    let mut etcd_only: Vec<&String> = found
        .keys()
        .filter(|h| etcd.contains(h) && !db.contains(h))
        .collect();
    let mut leaders = BTreeSet::new();
    for cluster in inventory.clusters.values() {
        if let Ok(health) = crate::clients::etcd::health(&project.etcd_endpoints(cluster)).await {
            leaders.extend(health.leader);
        }
    }
    etcd_only.sort_by_key(|h| leaders.contains(h.as_str()));
    order.extend(etcd_only);
    // 3. DB hosts per cluster: the replicas, then the primary (decided again when the run
    // gets there; this is the order shown).
    for cluster in inventory.clusters.values() {
        let leader = leader_host(project, cluster).await;
        let mut hosts: Vec<&String> = cluster
            .postgres
            .iter()
            .filter(|h| found.contains_key(*h) && !order.contains(h))
            .collect();
        hosts.sort_by_key(|h| leader.as_deref() == Some(h.as_str()));
        order.extend(hosts);
    }
    order
        .into_iter()
        .filter_map(|h| found.get(h).map(|(u, _)| u.clone()))
        .collect()
}

async fn leader_host(project: &Project, cluster: &crate::inventory::Cluster) -> Option<String> {
    let patroni =
        crate::clients::patroni::Patroni::from_secrets(&project.secrets(false).ok()?).ok()?;
    let view = patroni.view(project, cluster).await?;
    super::host_of_member(project, cluster, &view.leader()?.name)
}

/// The switchovers the run will make: one per cluster whose primary's host has PostgreSQL,
/// Patroni or PgBouncer to restart (or, with `reboot`, a reboot to make).
async fn switchovers(project: &Project, order: &[HostUpdate], reboot: bool) -> Vec<String> {
    let mut out = Vec::new();
    for cluster in project
        .inventory
        .clusters
        .values()
        .filter(|c| c.standby_of.is_none())
    {
        let Some(leader) = leader_host(project, cluster).await else {
            continue;
        };
        if order.iter().any(|h| {
            h.host == leader
                && (h.restarts.iter().any(|r| r.moves_the_primary())
                    || (reboot && h.reboot_required))
        }) {
            out.push(format!(
                "{}: one switchover away from {leader} before it is updated (its replicas first)",
                cluster.name
            ));
        }
    }
    out
}

/// Run the plan.
pub async fn update(
    project: &Project,
    secrets: &Secrets,
    plan: UpdatePlan,
    sessions: BTreeMap<String, Session>,
    timeout: Duration,
    on_step: &(dyn Fn(&str) + Sync),
) -> Result<UpdateReport> {
    let started = Instant::now();
    let mut hosts = Hosts { sessions };
    // Each step is told as it is done (a run that stops has said how far it got).
    let mut steps = Steps {
        done: Vec::new(),
        on_step,
    };
    for update in &plan.hosts {
        // A DB host is out of the read port for all of its update (its libraries are replaced
        // under PgBouncer during the upgrade; then its restarts or reboot), so no new read
        // lands on it meanwhile; back in when it serves again.
        let drained = drain(project, secrets, &update.host).await?;
        let result = update_one(
            project, secrets, &plan, update, &mut hosts, &mut steps, timeout,
        )
        .await;
        undrain(drained).await;
        result?;
    }
    for (_, session) in hosts.sessions {
        session.close().await;
    }
    Ok(UpdateReport {
        plan,
        steps: steps.done,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One host of the plan: its upgrade (restarts held back), the switchover away from it when it
/// is a primary whose PostgreSQL, Patroni or PgBouncer must restart (or that reboots), then its
/// restarts in the stack's order or its reboot; the restarts it owed are cleared last.
async fn update_one(
    project: &Project,
    secrets: &Secrets,
    plan: &UpdatePlan,
    update: &HostUpdate,
    hosts: &mut Hosts,
    steps: &mut Steps<'_>,
    timeout: Duration,
) -> Result<()> {
    let (restarts, reboot) = upgrade(plan, update, hosts, steps).await?;
    // A primary is never restarted in place: a switchover to an updated replica first.
    let touches_postgres = reboot || restarts.iter().any(|r| r.moves_the_primary());
    switch_away(project, secrets, plan, update, touches_postgres, steps).await?;
    if reboot {
        // The reboot restarts every service: the owed restarts are made by it.
        let seconds = reboot_one(project, secrets, hosts, &update.host, timeout).await?;
        steps.push(format!(
            "{}: rebooted, back in service in {seconds:.1} s",
            update.host
        ));
    } else {
        for restart in &restarts {
            restart_one(project, secrets, hosts, &update.host, *restart, timeout).await?;
            steps.push(format!("{}: restarted {}", update.host, restart.name()));
        }
    }
    hosts
        .session(&update.host)?
        .run(&RemoteCommand::new(&["rm", "-f", OWED]))
        .await
        .map_err(|e| Error::failure(format!("{}: {e}", update.host), None))?;
    Ok(())
}

/// The host's packages upgraded with every service start held back (the restarts it owes are
/// written there first). Returns the restarts to make (with the services that still ran replaced
/// files) and whether it reboots.
async fn upgrade(
    plan: &UpdatePlan,
    update: &HostUpdate,
    hosts: &Hosts,
    steps: &mut Steps<'_>,
) -> Result<(BTreeSet<Restart>, bool)> {
    let mut restarts: BTreeSet<Restart> = update.restarts.iter().copied().collect();
    let mut reboot = plan.reboot && update.reboot_required;
    let owed: Vec<&str> = update.restarts.iter().map(|r| r.name()).collect();
    let output = hosts
        .session(&update.host)?
        .run(&RemoteCommand::script(
            UPGRADE_SCRIPT,
            &[owed.join("\n"), STALE_UNITS.join(" ")],
            "apt-get upgrade (service restarts held back)",
        ))
        .await;
    let mut stale_note = None;
    if let Ok(output) = &output {
        let stale: Vec<Restart> = output
            .stdout_text()
            .lines()
            .filter_map(|l| l.strip_prefix("stale "))
            .filter_map(|unit| Restart::parse(unit.trim()))
            .collect();
        if !stale.is_empty() {
            stale_note = Some(format!(
                "{}: {} still ran replaced files (a library): restarted too",
                update.host,
                stale
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        restarts.extend(stale);
        reboot |= plan.reboot && output.stdout_text().lines().any(|l| l == "reboot-required");
        patroni_restarts_postgresql(&mut restarts);
    }
    if let Err(e) = output {
        return Err(upgrade_failed(&update.host, e.to_string()));
    }
    let upgraded = if update.upgrades.is_empty() {
        "nothing (the restarts a stopped run left owed remain)".to_owned()
    } else {
        update
            .upgrades
            .iter()
            .map(|u| format!("{} {} → {}", u.package, u.from, u.to))
            .collect::<Vec<_>>()
            .join(", ")
    };
    steps.push(format!("{}: upgraded {upgraded}", update.host));
    if let Some(note) = stale_note {
        steps.push(note);
    }
    Ok((restarts, reboot))
}

/// The error of a failed upgrade on `host`, naming the package that failed when apt says it.
fn upgrade_failed(host: &str, text: String) -> Error {
    let package = text
        .lines()
        .find_map(|l| l.split("error processing package ").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    Error::failure(
        format!(
            "{host}: the upgrade failed{}: {text}",
            package.map_or_else(String::new, |p| format!(" on package {p}"))
        ),
        Some(format!(
            "the hosts before {host} are updated; fix the cause there (`apt-get -f install`, `journalctl -xe`) and run `pgstrap update` again: it resumes with this host"
        )),
    )
}

/// Patroni's restart restarts PostgreSQL too: PostgreSQL's own is dropped then.
fn patroni_restarts_postgresql(restarts: &mut BTreeSet<Restart>) {
    if restarts.contains(&Restart::Patroni) {
        restarts.remove(&Restart::Postgresql);
    }
}

/// A primary is never restarted in place: when the host's PostgreSQL is touched
/// (`touches_postgres`) and it leads a primary-side cluster, a switchover to an updated replica
/// (else another member) first.
async fn switch_away(
    project: &Project,
    secrets: &Secrets,
    plan: &UpdatePlan,
    update: &HostUpdate,
    touches_postgres: bool,
    steps: &mut Steps<'_>,
) -> Result<()> {
    for cluster in project
        .inventory
        .clusters
        .values()
        .filter(|c| c.postgres.contains(&update.host) && c.standby_of.is_none())
    {
        if touches_postgres
            && leader_host(project, cluster).await.as_deref() == Some(update.host.as_str())
        {
            let candidate = plan
                .hosts
                .iter()
                .map(|h| &h.host)
                .take_while(|h| **h != update.host)
                .find(|h| cluster.postgres.contains(h))
                .or_else(|| cluster.postgres.iter().find(|h| **h != update.host));
            let switched = crate::stack::ops::switchover::switchover(
                project,
                secrets,
                Some(&cluster.name),
                candidate.map(String::as_str),
            )
            .await?;
            steps.push(format!(
                "{}: switched over {} → {} ({:.1} s)",
                cluster.name, switched.from, switched.to, switched.seconds
            ));
        }
    }
    Ok(())
}

/// One restart on `host`, behind its gate.
async fn restart_one(
    project: &Project,
    secrets: &Secrets,
    hosts: &Hosts,
    host: &str,
    restart: Restart,
    timeout: Duration,
) -> Result<()> {
    let clusters: Vec<&crate::inventory::Cluster> = project.inventory.clusters.values().collect();
    match restart {
        Restart::Etcd => {
            for cluster in clusters.iter().filter(|c| c.etcd.iter().any(|h| h == host)) {
                let endpoints = project.etcd_endpoints(cluster);
                let _ =
                    crate::clients::etcd::keep_leader_off(&endpoints, &project.address(host)).await;
                hosts.systemctl(host, "restart", "etcd").await?;
                crate::clients::etcd::wait_healthy(&endpoints, cluster.etcd.len(), timeout).await?;
            }
        }
        Restart::Pgbackrest => hosts.systemctl(host, "restart", "pgbackrest").await?,
        // The host is a replica here (drained; a primary was switched away from first). Back
        // when it runs as a streaming replica whose PgBouncer serves queries.
        Restart::Pgbouncer | Restart::Postgresql | Restart::Patroni => {
            let mode = match restart {
                Restart::Pgbouncer => {
                    hosts.systemctl(host, "restart", "pgbouncer").await?;
                    crate::stack::restart::Restart::Pending
                }
                Restart::Patroni => {
                    hosts.systemctl(host, "restart", "patroni").await?;
                    crate::stack::restart::Restart::Pending
                }
                _ => crate::stack::restart::Restart::Always,
            };
            for cluster in clusters
                .iter()
                .filter(|c| c.postgres.iter().any(|h| h == host))
            {
                replica_in_service(project, secrets, cluster, host, mode, timeout).await?;
            }
        }
        Restart::Haproxy => {
            // A seamless reload: the master process re-executes the new binary.
            hosts.systemctl(host, "reload", "haproxy").await?;
            for cluster in clusters
                .iter()
                .filter(|c| c.balancers.iter().any(|h| h == host))
            {
                let port = project.port(cluster, crate::project::Port::HaproxyWrite);
                wait_tcp(&project.address(host), port, timeout).await?;
            }
        }
        Restart::Keepalived => {
            hosts.systemctl(host, "restart", "keepalived").await?;
            // The VIP answers again (from this balancer or, when it held it, the next one).
            for cluster in clusters
                .iter()
                .filter(|c| c.balancers.iter().any(|h| h == host))
            {
                if let Some(vip) = cluster.vip {
                    let port = project.port(cluster, crate::project::Port::HaproxyWrite);
                    wait_tcp(&vip.addr().to_string(), port, timeout).await?;
                }
            }
        }
    }
    Ok(())
}

/// The host's boot id (a new one after each boot).
async fn boot_id(session: &Session) -> std::result::Result<String, String> {
    session
        .run(&RemoteCommand::new(&[
            "cat",
            "/proc/sys/kernel/random/boot_id",
        ]))
        .await
        .map(|o| o.stdout_text().trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Reboot `host` out of service and wait until it serves again: etcd's leadership moved away and
/// the replica drained from the read port first; back when its boot id changed (a new
/// connection replaces the old one), its etcd members healthy, its replicas running, streaming
/// and serving through PgBouncer, its HAProxy and the VIP answering. Returns the seconds from
/// the reboot until then. A primary's host is never rebooted: the run switched over first.
async fn reboot_one(
    project: &Project,
    secrets: &Secrets,
    hosts: &mut Hosts,
    host: &str,
    timeout: Duration,
) -> Result<f64> {
    let clusters: Vec<&crate::inventory::Cluster> = project.inventory.clusters.values().collect();
    let address = project.address(host);
    for cluster in clusters.iter().filter(|c| c.etcd.iter().any(|h| h == host)) {
        let _ =
            crate::clients::etcd::keep_leader_off(&project.etcd_endpoints(cluster), &address).await;
    }
    let started = Instant::now();
    let result = async {
        let before = boot_id(hosts.session(host)?)
            .await
            .map_err(|e| Error::failure(format!("{host}: boot id: {e}"), None))?;
        // Queued, not waited for: the connection goes down with the host.
        let _ = hosts
            .session(host)?
            .run(&RemoteCommand::new(&["systemctl", "--no-block", "reboot"]))
            .await;
        if let Some(old) = hosts.sessions.remove(host) {
            old.close().await;
        }
        let session = crate::clients::gate::wait_for(
            &format!("{host} to boot again"),
            timeout,
            Duration::from_secs(1),
            &format!("see the console of {host}; `pgstrap update` resumes with it once it runs"),
            || async {
                let session = match crate::exec::connect(project, host, secrets).await {
                    Ok(s) => s,
                    Err(e) => return crate::clients::gate::Poll::NotYet(e.to_string()),
                };
                match boot_id(&session).await {
                    Ok(id) if id != before => crate::clients::gate::Poll::Ready(session),
                    Ok(_) => {
                        session.close().await;
                        crate::clients::gate::Poll::NotYet("not rebooted yet".into())
                    }
                    Err(e) => crate::clients::gate::Poll::NotYet(e),
                }
            },
        )
        .await?;
        hosts.sessions.insert(host.to_owned(), session);
        back_in_service(project, secrets, host, timeout).await
    }
    .await;
    result.map(|()| started.elapsed().as_secs_f64())
}

/// `host`'s PgBouncer drained from the read port of every cluster it is a DB host of (HAProxy's
/// admin socket on each balancer: no new connection, those open may finish).
async fn drain(
    project: &Project,
    secrets: &Secrets,
    host: &str,
) -> Result<Vec<(crate::clients::haproxy::Balancers, String)>> {
    let mut drained = Vec::new();
    for cluster in project
        .inventory
        .clusters
        .values()
        .filter(|c| c.postgres.iter().any(|h| h == host))
    {
        let member = super::member_of_host(project, cluster, host)?;
        let balancers = crate::clients::haproxy::Balancers::open(project, cluster, secrets).await;
        balancers.set_state("replicas", &member, "drain").await;
        drained.push((balancers, member));
    }
    Ok(drained)
}

/// Back in the read port (its health checks decide again).
async fn undrain(drained: Vec<(crate::clients::haproxy::Balancers, String)>) {
    for (balancers, member) in drained {
        balancers.set_state("replicas", &member, "ready").await;
        balancers.close().await;
    }
}

/// Gates: every part of the stack on `host` serves again after its reboot.
async fn back_in_service(
    project: &Project,
    secrets: &Secrets,
    host: &str,
    timeout: Duration,
) -> Result<()> {
    for cluster in project.inventory.clusters.values() {
        if cluster.etcd.iter().any(|h| h == host) {
            crate::clients::etcd::wait_healthy(
                &project.etcd_endpoints(cluster),
                cluster.etcd.len(),
                timeout,
            )
            .await?;
        }
        if cluster.postgres.iter().any(|h| h == host) {
            let mode = crate::stack::restart::Restart::Pending;
            replica_in_service(project, secrets, cluster, host, mode, timeout).await?;
        }
        if cluster.balancers.iter().any(|h| h == host) {
            let port = project.port(cluster, crate::project::Port::HaproxyWrite);
            wait_tcp(&project.address(host), port, timeout).await?;
            if let Some(vip) = cluster.vip {
                wait_tcp(&vip.addr().to_string(), port, timeout).await?;
            }
        }
    }
    Ok(())
}

/// Gate: `host` runs as a replica of `cluster` (restarted once more with
/// [`Restart::Always`](crate::stack::restart::Restart)), streams and serves through PgBouncer.
async fn replica_in_service(
    project: &Project,
    secrets: &Secrets,
    cluster: &crate::inventory::Cluster,
    host: &str,
    mode: crate::stack::restart::Restart,
    timeout: Duration,
) -> Result<()> {
    // The client alone: the gate polls the member itself (no view of the cluster needed first).
    let patroni = crate::clients::patroni::Patroni::from_secrets(secrets)?;
    crate::stack::restart::restart_replica(project, cluster, secrets, &patroni, host, mode, timeout)
        .await
        .map(|_| ())
}

/// Gate: `address:port` accepts TCP connections.
async fn wait_tcp(address: &str, port: u16, timeout: Duration) -> Result<()> {
    crate::clients::gate::wait_for(
        &format!("{address}:{port} to accept connections"),
        timeout,
        Duration::from_millis(200),
        "see `journalctl` of the service on that host (`pgstrap status -i INV`)",
        || async {
            match tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect((address, port)),
            )
            .await
            {
                Ok(Ok(_)) => crate::clients::gate::Poll::Ready(()),
                Ok(Err(e)) => crate::clients::gate::Poll::NotYet(e.to_string()),
                Err(_) => crate::clients::gate::Poll::NotYet("timed out".into()),
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulation_lists_upgrades_not_new_installs() {
        let text = "Inst postgresql-17 [17.12-0+deb13u1] (17.12-0+deb13u1.1 pgstrap-updates [amd64])\nConf postgresql-17 (17.12-0+deb13u1.1 pgstrap-updates [amd64])\nInst libnew (1.0 stable [amd64])\nInst patroni [4.0.7-3~deb13u1] (4.0.7-3~deb13u1.1 pgstrap-updates [all])\n";
        assert_eq!(
            parse_simulation(text),
            vec![
                Upgrade {
                    package: "postgresql-17".into(),
                    from: "17.12-0+deb13u1".into(),
                    to: "17.12-0+deb13u1.1".into()
                },
                Upgrade {
                    package: "patroni".into(),
                    from: "4.0.7-3~deb13u1".into(),
                    to: "4.0.7-3~deb13u1.1".into()
                },
            ]
        );
    }

    #[test]
    fn restarts_are_made_in_the_stacks_order() {
        let mut owed = vec![Restart::Keepalived, Restart::Patroni, Restart::Etcd];
        owed.sort();
        assert_eq!(owed, [Restart::Etcd, Restart::Patroni, Restart::Keepalived]);
        for r in owed {
            assert_eq!(Restart::parse(r.name()), Some(r));
        }
    }
}
