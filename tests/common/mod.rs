//! Helpers shared by the end-to-end tests on lab hosts: the switch that enables them, running
//! the real binary, and SSH to a lab host exactly as a user would (the lab's key and known_hosts,
//! strict host-key checking). Only lab addresses (10.77.x.x) are ever contacted.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The lab's state directory (`pgstrap lab up` default).
pub const DIR: &str = "/var/lib/pgstrap/lab";

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

/// A lab of fresh hosts (`pgstrap lab down`, then `pgstrap lab up ARGS`): what a test finds does
/// not depend on what ran before. Returns the lab inventory's path.
pub fn fresh_lab(up_args: &[&str]) -> String {
    pgstrap_ok(&["lab", "down"]);
    let mut args = vec!["lab", "up"];
    args.extend_from_slice(up_args);
    pgstrap_ok(&args);
    format!("{DIR}/inventory.yaml")
}

/// Run the real binary; its output is echoed for the test log.
pub fn pgstrap(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_pgstrap"))
        .args(args)
        .output()
        .expect("run pgstrap");
    eprintln!(
        "$ pgstrap {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Run the binary and insist on success; returns stdout.
pub fn pgstrap_ok(args: &[&str]) -> String {
    let output = pgstrap(args);
    assert!(output.status.success(), "pgstrap {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn known_hosts() -> PathBuf {
    Path::new(DIR).join("known_hosts")
}

/// `ssh` with the lab key, a given known_hosts and strict host-key checking.
pub fn ssh(address: &str, known_hosts: &Path, remote: &str) -> Output {
    Command::new("ssh")
        .args(pgstrap::lab::ssh_args(
            &Path::new(DIR).join("id_ed25519"),
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
    /// Named steps taken while writing (drill time at start and end), each reported by `finish`.
    steps: Vec<(String, std::time::Duration, std::time::Duration)>,
}

impl Writer {
    /// Start writing every 100 ms through `vip:5000`, with the inventory's secrets (and TLS).
    pub fn start(inventory: &str, vip: &str) -> Self {
        use pgstrap::stack::drill::client;
        let project = pgstrap::render::load_project(Path::new(inventory), &[]).expect("inventory");
        let secrets = project.secrets(false).expect("secrets");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
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
                client::Style::Reconnecting,
                std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
                epoch,
            )
        });
        Self {
            runtime,
            target,
            running,
            epoch,
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
        use std::collections::BTreeSet;
        let log = self.runtime.block_on(self.running.stop());
        let acknowledged: BTreeSet<u64> = log.acknowledged.iter().map(|(id, _)| *id).collect();
        let target = &self.target;
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
        }
        eprintln!(
            "figure: {what}: {} writes acknowledged, {lost} lost, longest time without writes {:.1} s",
            acknowledged.len(),
            log.longest_gap(std::time::Duration::ZERO, self.epoch.elapsed())
                .as_secs_f64()
        );
        let _ = self
            .runtime
            .block_on(pgstrap::stack::drill::client::cleanup(target));
        assert!(!acknowledged.is_empty(), "the client wrote nothing");
        assert_eq!(lost, 0, "acknowledged writes lost");
    }
}
