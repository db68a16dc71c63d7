//! Helpers shared by the end-to-end tests on lab hosts: the switch that enables them, running
//! the real binary, and SSH to a lab host exactly as a user would (the lab's key and known_hosts,
//! strict host-key checking). Only lab addresses (10.77.x.x) are ever contacted.
//!
//! The lab is the one in `PGSTRAP_LAB_DIR` (default /var/lib/pgstrap/lab), in slot
//! `PGSTRAP_LAB_SLOT` (default 0): tests/run.sh runs two rows of test files side by side, each on
//! its own lab; a test names hosts' addresses through [`ip`] and [`vip`], never literally.
#![allow(dead_code)]

pub mod cli;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The lab's state directory: `PGSTRAP_LAB_DIR`, else `pgstrap lab up`'s default (the pgstrap
/// commands the tests run read the same variable).
pub fn dir() -> String {
    std::env::var("PGSTRAP_LAB_DIR").unwrap_or_else(|_| pgstrap::lab::DEFAULT_DIR.into())
}

/// The lab's slot: `PGSTRAP_LAB_SLOT`, else 0 (`pgstrap lab up` reads the same variable).
pub fn slot() -> pgstrap::lab::Slot {
    let number = std::env::var("PGSTRAP_LAB_SLOT")
        .ok()
        .map(|n| n.parse().expect("PGSTRAP_LAB_SLOT: a number"))
        .unwrap_or(0);
    pgstrap::lab::Slot::new(number).expect("PGSTRAP_LAB_SLOT: a lab slot")
}

/// A lab host's address by its name: `nK` in dc1, `dK` in dc2 (10.77.0.(10 + K) in slot 0).
pub fn ip(host: &str) -> String {
    let (dc, number) = match host.split_at(1) {
        ("n", k) => (0, k),
        ("d", k) => (1, k),
        _ => panic!("not a lab host name: {host}"),
    };
    let index = number.parse().expect("a lab host number");
    slot().host_address(dc, index).to_string()
}

/// The VIP of the lab's datacenter `dc` (0: dc1, 1: dc2), without its prefix length.
pub fn vip_of(dc: u8) -> String {
    let vip = slot().vip(dc);
    vip.split('/').next().unwrap_or_default().to_string()
}

/// The VIP of the lab's cluster `main` (dc1).
pub fn vip() -> String {
    vip_of(0)
}

/// The network of the lab's datacenter 1 (`networks:` of an inventory a test writes).
pub fn network() -> String {
    slot().network(0)
}

/// etcdctl on a DB host, with the host's certificate from the inventory's CA (etcd refuses
/// clients without one).
pub const ETCDCTL: &str = "ETCDCTL_API=3 etcdctl --cacert=/etc/patroni/tls/ca.crt --cert=/etc/patroni/tls/host.crt --key=/etc/patroni/tls/host.key";

/// End-to-end tests change this machine (bridges, containers, the lab in the default directory).
/// They are `#[ignore]`d, so `cargo test` lists them as ignored; `tests/run.sh` runs them with
/// `--ignored` and `PGSTRAP_E2E=1`. A test selected without `PGSTRAP_E2E=1` (`cargo test --
/// --ignored`) fails instead of taking over this machine's lab unasked: never a silent pass.
pub fn require_e2e() {
    assert!(
        std::env::var("PGSTRAP_E2E").as_deref() == Ok("1"),
        "this end-to-end test changes this machine (the lab, or a private sshd run as root): \
         run it as root with PGSTRAP_E2E=1 (tests/run.sh does)"
    );
}

/// The lab inventory's path.
pub fn inventory() -> String {
    format!("{}/inventory.yaml", dir())
}

/// A lab of fresh hosts (`pgstrap lab down`, then `pgstrap lab up ARGS`): what a test finds does
/// not depend on what ran before. Returns the lab inventory's path. Tests whose subject is not
/// the install path pass `--preinstalled` (hosts start with the stack's packages installed).
pub fn fresh_lab(up_args: &[&str]) -> String {
    lab_down();
    let mut args = vec!["lab", "up"];
    args.extend_from_slice(up_args);
    pgstrap_ok(&args);
    inventory()
}

/// `pgstrap lab down` (a shared cluster goes with it).
pub fn lab_down() {
    unshare();
    pgstrap_ok(&["lab", "down"]);
}

/// A rolled-out cluster that tests in a row share instead of each bringing up its own. A test
/// [`take`]s it and [`give_back`]s it at its end when it left it as it found it (healthy, a
/// second apply changing nothing); a test that fails or changes it for good does not, and the
/// next test rolls out a fresh one. `up` are the `lab up` arguments.
pub struct Shared {
    pub name: &'static str,
    pub up: &'static [&'static str],
}

/// Debian 13, the README's layout: 3 DB hosts with etcd, 2 balancers with a VIP.
pub const MAIN: Shared = Shared {
    name: "main (Debian 13, 5 hosts)",
    up: &["--preinstalled", "--hosts", "5"],
};

/// Debian 12, the README's layout (the e2e tests that take the release from
/// `PGSTRAP_E2E_RELEASE=12`).
pub const MAIN_12: Shared = Shared {
    name: "main (Debian 12, 5 hosts)",
    up: &["--preinstalled", "--hosts", "5", "--release", "12"],
};

/// The README's layout on the release the test is run for (`PGSTRAP_E2E_RELEASE`, 13 by
/// default).
pub fn main_of_release() -> &'static Shared {
    if release() == "12" {
        &MAIN_12
    } else {
        &MAIN
    }
}

/// The Debian release the e2e tests that take it run on: `PGSTRAP_E2E_RELEASE`, 13 by default.
pub fn release() -> String {
    std::env::var("PGSTRAP_E2E_RELEASE").unwrap_or_else(|_| "13".into())
}

/// Debian 13, cluster `main` (5 hosts, VIP) and its DR standby cluster `dr` (5 hosts, VIP) in a
/// second datacenter.
pub const DR: Shared = Shared {
    name: "main + dr (Debian 13, 5 + 5 hosts)",
    up: &["--preinstalled", "--hosts", "5", "--dr-hosts", "5"],
};

/// The marker of a cluster given back: its name and the lab's host keys (a fresh lab has new
/// ones, so a marker never outlives the hosts it was written for).
fn marker() -> std::path::PathBuf {
    Path::new(&dir()).join("e2e-shared-cluster")
}

fn marker_text(shared: &Shared) -> Option<String> {
    let keys = std::fs::read_to_string(known_hosts()).ok()?;
    Some(format!("{}\n{keys}", shared.name))
}

/// Take the shared cluster: the one the lab holds when the last test gave it back and `pgstrap
/// verify` passes; otherwise a fresh lab, rolled out (verified). Returns the inventory's path.
pub fn take(shared: &Shared) -> String {
    let marked = std::fs::read_to_string(marker()).ok();
    unshare();
    if marked.is_some() && marked == marker_text(shared) {
        if pgstrap(&["verify", "-i", &inventory()]).status.success() {
            eprintln!("shared cluster {}: reused", shared.name);
            return inventory();
        }
        eprintln!(
            "shared cluster {}: verify failed, rolling out afresh",
            shared.name
        );
    }
    let inventory = fresh_lab(shared.up);
    let output = pgstrap(&["apply", "-i", &inventory]);
    assert!(output.status.success(), "rollout of {} failed", shared.name);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("verified: all"),
        "verification of {} failed",
        shared.name
    );
    inventory
}

/// Give the cluster back for the next test: call it last, once the test has left the cluster as
/// it found it (or, for the test that rolled it out itself, once it has checked the rollout).
pub fn give_back(shared: &Shared) {
    let text = marker_text(shared).expect("the lab's known_hosts");
    std::fs::write(marker(), text).expect("write the shared-cluster marker");
}

/// Forget any cluster given back (the lab is about to be replaced).
fn unshare() {
    let _ = std::fs::remove_file(marker());
}
/// The member that leads `cluster` (its leader or standby leader), by `pgstrap status --json`:
/// its name and its address.
pub fn leader(inventory: &str, cluster: &str) -> (String, String) {
    let status = status(&["--json", "-i", inventory]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(json["version"], 1, "status --json shape version");
    json["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == cluster)
        .and_then(|c| {
            c["patroni"]["members"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "leader" || m["role"] == "standby_leader")
        })
        .and_then(|m| {
            Some((
                m["name"].as_str()?.to_owned(),
                m["host"].as_str()?.to_owned(),
            ))
        })
        .unwrap_or_else(|| panic!("no leader of {cluster} in status: {status}"))
}

/// Run the real binary; its output is echoed for the test log.
pub fn pgstrap(args: &[&str]) -> Output {
    let output = cli::command().args(args).output().expect("run pgstrap");
    eprintln!(
        "$ pgstrap {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `pgstrap status …`: exit 0 (healthy) or 1 (degraded: the tests that call it look at the
/// state themselves), never anything else; returns stdout.
pub fn status(args: &[&str]) -> String {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let output = pgstrap(&all);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "pgstrap {all:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Run the binary and insist on success; returns stdout.
pub fn pgstrap_ok(args: &[&str]) -> String {
    let output = pgstrap(args);
    assert!(output.status.success(), "pgstrap {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn known_hosts() -> PathBuf {
    Path::new(&dir()).join("known_hosts")
}

/// `ssh` with the lab key, a given known_hosts and strict host-key checking.
pub fn ssh(address: &str, known_hosts: &Path, remote: &str) -> Output {
    Command::new("ssh")
        .args(pgstrap::lab::ssh_args(
            &Path::new(&dir()).join("id_ed25519"),
            known_hosts,
            address,
        ))
        .arg(remote)
        .output()
        .expect("run ssh")
}

/// Run a command on a lab host and insist on success; returns trimmed stdout.
pub fn run_on(address: &str, remote: &str) -> String {
    let output = ssh(address, &known_hosts(), remote);
    assert!(
        output.status.success(),
        "ssh {address} {remote:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A client writing through a VIP's write port while a test changes the cluster (the drill's
/// reconnecting client), and the count of what it lost.
pub struct Writer {
    runtime: tokio::runtime::Runtime,
    target: pgstrap::stack::drill::client::Target,
    running: pgstrap::stack::drill::client::Running,
    epoch: std::time::Instant,
    /// The inventory: its secrets are read again for the read back (a rotation changes them).
    inventory: String,
    /// Named steps taken while writing (drill time at start and end), each reported by `finish`.
    steps: Vec<(String, std::time::Duration, std::time::Duration)>,
}

impl Writer {
    /// Start writing every 100 ms through `vip:5000`, with the inventory's secrets (and TLS), a
    /// new connection for every write.
    pub fn start(inventory: &str, vip: &str) -> Self {
        Self::start_with(
            inventory,
            vip,
            pgstrap::stack::drill::client::Style::Reconnecting,
        )
    }

    /// `start` with another client style (`LongLived`: one session, replaced when it breaks).
    pub fn start_with(
        inventory: &str,
        vip: &str,
        style: pgstrap::stack::drill::client::Style,
    ) -> Self {
        use pgstrap::stack::drill::client;
        let project = pgstrap::project::load(Path::new(inventory), &[]).expect("inventory");
        let secrets = project.secrets(false).expect("secrets");
        let runtime = cli::runtime();
        let target = client::Target {
            address: vip.into(),
            port: 5000,
            secrets,
            interval: std::time::Duration::from_millis(100),
            timeout: std::time::Duration::from_secs(2),
        };
        runtime
            .block_on(client::prepare(&target))
            .expect("drill table");
        let epoch = std::time::Instant::now();
        let running = runtime.block_on(async {
            client::start(
                target.clone(),
                style,
                std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
                epoch,
            )
        });
        Self {
            runtime,
            target,
            running,
            epoch,
            inventory: inventory.to_owned(),
            steps: Vec::new(),
        }
    }

    /// Run `step` while the client writes; `finish` reports its duration and the longest time
    /// without an acknowledged write during it.
    pub fn step<T>(&mut self, what: &str, step: impl FnOnce() -> T) -> T {
        let from = self.epoch.elapsed();
        let out = step();
        self.steps
            .push((what.to_owned(), from, self.epoch.elapsed()));
        out
    }

    /// Stop, read back every acknowledged write through the VIP, print the figure (`what`) and
    /// insist that the client wrote and lost nothing.
    pub fn finish(self, what: &str) {
        self.finish_counting(what);
    }

    /// `finish`, and insist that no write failed either: every attempt was acknowledged (but the
    /// one in flight when the client stopped).
    pub fn finish_uninterrupted(self, what: &str) {
        let (attempted, acknowledged) = self.finish_counting(what);
        assert!(
            attempted <= acknowledged + 1,
            "{} of {attempted} writes failed",
            attempted - acknowledged
        );
    }

    /// `finish`, returning the writes attempted and acknowledged.
    fn finish_counting(self, what: &str) -> (u64, u64) {
        use std::collections::BTreeSet;
        let log = self.runtime.block_on(self.running.stop());
        let acknowledged: BTreeSet<u64> = log.acknowledged.iter().map(|(id, _)| *id).collect();
        // The secrets as they are now (a rotation during the test changed them).
        let project = pgstrap::project::load(Path::new(&self.inventory), &[]).expect("inventory");
        let target = &pgstrap::stack::drill::client::Target {
            secrets: project.secrets(false).expect("secrets"),
            ..self.target.clone()
        };
        let present: BTreeSet<u64> = self.runtime.block_on(async {
            let client =
                pgstrap::stack::verify::connect(&target.address, target.port, &target.secrets)
                    .await
                    .expect("connect through the VIP");
            pgstrap::stack::verify::rows(&client, "SELECT id FROM pgstrap_drill.writes")
                .await
                .expect("read the writes")
                .into_iter()
                .filter_map(|r| r.first().and_then(|v| v.parse().ok()))
                .collect()
        });
        let lost = acknowledged.difference(&present).count();
        for (step, from, to) in &self.steps {
            eprintln!(
                "figure: {step}: {:.1} s, longest time without writes {:.1} s",
                (*to - *from).as_secs_f64(),
                log.longest_gap(*from, *to).as_secs_f64()
            );
            // Where the writes stopped for over a second, to set beside the step's own log.
            let mut last = *from;
            for (_, at) in log
                .acknowledged
                .iter()
                .filter(|(_, at)| *at >= *from && *at <= *to)
            {
                if at.saturating_sub(last) > std::time::Duration::from_secs(1) {
                    eprintln!(
                        "figure:   no write acknowledged from {:.1} s to {:.1} s into it",
                        (last - *from).as_secs_f64(),
                        (*at - *from).as_secs_f64()
                    );
                }
                last = *at;
            }
        }
        eprintln!(
            "figure: {what}: {} writes attempted, {} acknowledged, {lost} lost, longest time without writes {:.1} s",
            log.attempted,
            acknowledged.len(),
            log.longest_gap(std::time::Duration::ZERO, self.epoch.elapsed())
                .as_secs_f64()
        );
        let _ = self
            .runtime
            .block_on(pgstrap::stack::drill::client::cleanup(target));
        assert!(!acknowledged.is_empty(), "the client wrote nothing");
        assert_eq!(lost, 0, "acknowledged writes lost");
        (log.attempted, acknowledged.len() as u64)
    }
}

/// A client reading through a VIP's read port (a new connection for every read, as an
/// application's pool would open one), counting the reads that failed: a change that drains
/// each replica before touching it fails none.
pub struct Reader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<ReadLog>,
}

/// What a [`Reader`] saw.
#[derive(Debug, Default)]
pub struct ReadLog {
    pub attempted: u64,
    pub failed: u64,
    /// The first few failures (seconds since the reader started, error), for the message.
    pub errors: Vec<(f64, String)>,
    pub longest_gap: std::time::Duration,
}

impl Reader {
    /// Read `SELECT 1` every 100 ms through `vip:port` with the inventory's secrets.
    pub fn start(inventory: &str, vip: &str, port: u16) -> Self {
        let project = pgstrap::project::load(Path::new(inventory), &[]).expect("inventory");
        let secrets = project.secrets(false).expect("secrets");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let vip = vip.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = cli::runtime();
            let mut log = ReadLog::default();
            let epoch = std::time::Instant::now();
            let mut last_ok = epoch;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                log.attempted += 1;
                let read = runtime.block_on(async {
                    // 5 s, as the writer's: a new TLS connection with SCRAM through HAProxy and
                    // PgBouncer can take seconds on a loaded machine (two rows of tests, a
                    // host's package upgrade) without anything being interrupted.
                    tokio::time::timeout(std::time::Duration::from_secs(5), async {
                        let client = pgstrap::stack::verify::connect(&vip, port, &secrets).await?;
                        pgstrap::stack::verify::scalar(&client, "SELECT 1").await
                    })
                    .await
                    .unwrap_or_else(|_| Err("no answer within 5 s".into()))
                });
                match read {
                    Ok(_) => {
                        log.longest_gap = log.longest_gap.max(last_ok.elapsed());
                        last_ok = std::time::Instant::now();
                    }
                    Err(e) => {
                        log.failed += 1;
                        if log.errors.len() < 10 {
                            log.errors.push((epoch.elapsed().as_secs_f64(), e));
                        }
                    }
                }
                std::thread::sleep(
                    std::time::Duration::from_millis(100).saturating_sub(started.elapsed()),
                );
            }
            log
        });
        Self { stop, thread }
    }

    /// Stop, print the figure (`what`) and return the log.
    pub fn finish(self, what: &str) -> ReadLog {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let log = self.thread.join().expect("the reader");
        eprintln!(
            "figure: {what}: {} reads through the read port, {} failed, longest time without a read {:.1} s",
            log.attempted,
            log.failed,
            log.longest_gap.as_secs_f64()
        );
        for (at, error) in &log.errors {
            eprintln!("figure:   read failed {at:.1} s after the reader started: {error}");
        }
        log
    }
}
