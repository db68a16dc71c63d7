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
