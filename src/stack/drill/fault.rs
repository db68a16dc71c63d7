//! The faults a drill injects, and how each is healed. On lab hosts every scenario works (power
//! cut, network cut and freeze come from the lab); on real servers only the faults that can be
//! made over SSH, each with its heal armed first as a systemd timer ON the host, so a lost SSH
//! session never leaves a service stopped.

use std::time::Duration;

use serde::Serialize;

use crate::connect::{RemoteCommand, Session};
use crate::error::{Error, Result};

/// The drill scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 of the primary's postmaster (Patroni restarts or fails over).
    KillPostmaster,
    /// kill -9 of Patroni on the primary (PostgreSQL keeps running; systemd restarts Patroni).
    KillPatroni,
    /// Power cut of the primary's host, then it boots again (lab only).
    PowerCutPrimary,
    /// The primary's host cut off the network, then reconnected (lab only).
    IsolatePrimary,
    /// Every process of the primary's host frozen, then resumed (lab only).
    HangPrimary,
    /// etcd stopped on a majority of its members, then started.
    LoseEtcdQuorum,
    /// etcd stopped on one member (the etcd leader), then started.
    LoseOneEtcd,
    /// The etcd leader's host cut off the network, then reconnected (lab only).
    IsolateEtcdLeader,
    /// A planned switchover.
    Switchover,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillPostmaster => "kill-postmaster",
            Scenario::KillPatroni => "kill-patroni",
            Scenario::PowerCutPrimary => "power-cut-primary",
            Scenario::IsolatePrimary => "isolate-primary",
            Scenario::HangPrimary => "hang-primary",
            Scenario::LoseEtcdQuorum => "lose-etcd-quorum",
            Scenario::LoseOneEtcd => "lose-one-etcd",
            Scenario::IsolateEtcdLeader => "isolate-etcd-leader",
            Scenario::Switchover => "switchover",
        }
    }

    /// Whether the fault needs the lab (it cannot be made over SSH on a real server).
    pub fn lab_only(self) -> bool {
        matches!(
            self,
            Scenario::PowerCutPrimary
                | Scenario::IsolatePrimary
                | Scenario::HangPrimary
                | Scenario::IsolateEtcdLeader
        )
    }
}

/// Where faults are made: test hosts whose power, network and CPU a harness controls (the lab,
/// through [`HostFaults`]), or real servers over SSH.
#[derive(Clone)]
pub enum Injector {
    Lab(std::sync::Arc<dyn HostFaults>),
    Ssh,
}

/// What a harness of test hosts can do to a host from outside it. `pgstrap lab` implements it;
/// drills know only this, so the orchestration does not depend on the lab.
pub trait HostFaults: Send + Sync {
    /// The hosts it controls, as (name, address); empty when it controls none now.
    fn hosts(&self) -> Vec<(String, String)>;
    /// Make or undo `fault` on `host` (blocking: it runs commands and waits).
    fn apply(&self, host: &str, fault: HostFault) -> Result<()>;
}

/// A fault made from outside a test host, and its undoing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFault {
    /// Power cut: every process killed at once, the network gone.
    Kill,
    /// Boot a killed host again, with its disk as it was.
    Start,
    /// Cut its network link.
    Isolate,
    /// Restore its network link.
    Heal,
    /// Freeze every process.
    Freeze,
    /// Resume a frozen host.
    Thaw,
}

/// One fault on one or more hosts, and how it is undone.
#[derive(Debug, Clone)]
pub enum Fault {
    KillPostmaster,
    KillPatroni,
    PowerCut,
    Isolate,
    Freeze,
    StopEtcd,
}

impl Fault {
    fn heal_command(&self) -> Option<&'static [&'static str]> {
        match self {
            Fault::StopEtcd => Some(&["systemctl", "start", "etcd"]),
            _ => None,
        }
    }
}

/// The systemd unit name of a heal timer armed by a drill.
const HEAL_UNIT: &str = "pgstrap-drill-heal";

/// Inject `fault` on `host`. Over SSH, a heal that `duration` + a margin later runs on the host
/// by itself is armed first.
pub async fn inject(
    injector: &Injector,
    fault: &Fault,
    host: &str,
    session: &Session,
    duration: Duration,
) -> Result<()> {
    if let Some(heal) = fault.heal_command() {
        let after = format!("{}s", duration.as_secs() + 30);
        let mut arm = vec![
            "systemd-run",
            "--quiet",
            "--collect",
            "--unit",
            HEAL_UNIT,
            "--on-active",
            &after,
        ];
        arm.extend_from_slice(heal);
        // A timer left from an earlier drill is replaced.
        disarm(session).await;
        session
            .run(&RemoteCommand::new(&arm))
            .await
            .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))?;
    }
    match (fault, injector) {
        (Fault::KillPostmaster, _) => {
            ssh(
                session,
                // The oldest `postgres` process is the postmaster.
                &[
                    "pkill", "--signal", "KILL", "--oldest", "--exact", "postgres",
                ],
            )
            .await
        }
        (Fault::KillPatroni, _) => {
            ssh(
                session,
                &[
                    "systemctl",
                    "kill",
                    "--kill-whom=main",
                    "--signal=KILL",
                    "patroni",
                ],
            )
            .await
        }
        (Fault::StopEtcd, _) => ssh(session, &["systemctl", "stop", "etcd"]).await,
        (Fault::PowerCut, Injector::Lab(lab)) => outside(lab, host, HostFault::Kill).await,
        (Fault::Isolate, Injector::Lab(lab)) => outside(lab, host, HostFault::Isolate).await,
        (Fault::Freeze, Injector::Lab(lab)) => outside(lab, host, HostFault::Freeze).await,
        (_, Injector::Ssh) => Err(Error::usage(
            "this fault needs lab hosts",
            Some(
                "power cuts, network cuts and freezes are made only on `pgstrap lab` hosts".into(),
            ),
        )),
    }
}

/// Undo `fault` on `host` (a no-op for faults the stack heals by itself).
pub async fn heal(injector: &Injector, fault: &Fault, host: &str, session: &Session) -> Result<()> {
    match (fault, injector) {
        (Fault::StopEtcd, _) => {
            ssh(session, &["systemctl", "start", "etcd"]).await?;
            disarm(session).await;
            Ok(())
        }
        (Fault::PowerCut, Injector::Lab(lab)) => outside(lab, host, HostFault::Start).await,
        (Fault::Isolate, Injector::Lab(lab)) => outside(lab, host, HostFault::Heal).await,
        (Fault::Freeze, Injector::Lab(lab)) => outside(lab, host, HostFault::Thaw).await,
        _ => Ok(()),
    }
}

/// Stop the heal timer on the host (it may not exist: nothing to do then).
async fn disarm(session: &Session) {
    let timer = format!("{HEAL_UNIT}.timer");
    let _ = session
        .run(&RemoteCommand::new(&["systemctl", "stop", timer.as_str()]))
        .await;
}

async fn ssh(session: &Session, argv: &[&str]) -> Result<()> {
    session
        .run(&RemoteCommand::new(argv))
        .await
        .map(|_| ())
        .map_err(|e| Error::failure(e.to_string(), e.hint.clone()))
}

/// A fault made from outside the host, off the async runtime's threads (it runs commands and
/// waits).
async fn outside(lab: &std::sync::Arc<dyn HostFaults>, host: &str, fault: HostFault) -> Result<()> {
    let lab = lab.clone();
    let host = host.to_owned();
    tokio::task::spawn_blocking(move || lab.apply(&host, fault))
        .await
        .map_err(|e| Error::failure(format!("lab fault: {e}"), None))?
}
