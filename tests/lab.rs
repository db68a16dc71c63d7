//! End-to-end tests of `pgstrap lab` on this machine. They need root and change the machine
//! (bridges, nft table, containers), so they are `#[ignore]`d and run only with `--ignored` and
//! `PGSTRAP_E2E=1` (`tests/run.sh` as root); they take over the lab in the default directory.
//! They connect only to lab addresses (10.77.x.x).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{cli, dir, ip, known_hosts, pgstrap_ok, require_e2e, run_on, ssh};

fn reachable(address: &str) -> bool {
    ssh(address, &known_hosts(), "true").status.success()
}

fn boot_id(address: &str) -> String {
    run_on(address, "cat /proc/sys/kernel/random/boot_id")
}

fn status_line(host: &str) -> String {
    let out = pgstrap_ok(&["lab", "status"]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_default()
        .to_string()
}

fn text(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().expect(program);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn lab_up_rejects_zero_hosts_with_exit_2() {
    // Exit 2 either way: not root (bad input) or no hosts asked for; nothing is touched.
    let dir = tempfile::tempdir().expect("tempdir");
    let output = cli::command()
        .args(["lab", "up", "--hosts", "0", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
#[ignore = "end to end: needs root and takes over the lab; run with PGSTRAP_E2E=1 tests/run.sh"]
fn lab_end_to_end() {
    require_e2e();
    let _lab = take_lab();
    // The lab itself is the subject: it starts with none. Read after a first `down`: an earlier
    // lab has ip_forward on and restores it on down (unless a lab in another slot runs: then
    // forwarding stays on for it).
    pgstrap_ok(&["lab", "down"]);
    let alone_before = other_labs().is_empty();
    let forward_before = forward();

    // up: three hosts reachable over real SSH with strict host-key checking.
    let started = Instant::now();
    let stdout = pgstrap_ok(&["lab", "up", "--hosts", "3"]);
    eprintln!("lab up --hosts 3: {:?}", started.elapsed());
    assert_eq!(stdout.trim(), format!("{}/inventory.yaml", dir()));
    let inventory =
        std::fs::read_to_string(format!("{}/inventory.yaml", dir())).expect("inventory");
    assert!(inventory.contains(&format!("n3: {{address: {}, datacenter: dc1}}", ip("n3"))));
    assert!(inventory.contains("etcd: [n1, n2, n3]"));
    let addresses = [&ip("n1"), &ip("n2"), &ip("n3")];
    for (i, address) in addresses.iter().enumerate() {
        assert_eq!(run_on(address, "hostname"), format!("n{}", i + 1));
    }
    // The known_hosts is what makes it work: with an empty one, strict checking refuses.
    let empty = tempfile::NamedTempFile::new().expect("temp file");
    assert!(!ssh(addresses[0], empty.path(), "true").status.success());
    // Every lab host is in every host's /etc/hosts.
    assert!(run_on(addresses[0], "getent hosts n3").starts_with(&ip("n3")));

    // A second up leaves running hosts alone: fast, same boot ids.
    let boot_ids: Vec<String> = addresses.iter().map(|a| boot_id(a)).collect();
    let started = Instant::now();
    pgstrap_ok(&["lab", "up", "--hosts", "3"]);
    let second = started.elapsed();
    eprintln!("second lab up --hosts 3: {second:?}");
    let again: Vec<String> = addresses.iter().map(|a| boot_id(a)).collect();
    assert_eq!(boot_ids, again);

    // stop/start: a clean shutdown, and the disk persists.
    run_on(addresses[0], "echo kept > /root/persist && sync");
    pgstrap_ok(&["lab", "stop", "n1"]);
    assert!(
        status_line("n1").contains("stopped"),
        "{}",
        status_line("n1")
    );
    assert!(!reachable(addresses[0]));
    pgstrap_ok(&["lab", "start", "n1"]);
    assert_eq!(run_on(addresses[0], "cat /root/persist"), "kept");
    assert_ne!(boot_id(addresses[0]), boot_ids[0]);

    // kill: a power cut makes it unreachable (its netns is gone); start brings it back.
    run_on(addresses[1], "echo kept > /root/persist && sync");
    pgstrap_ok(&["lab", "kill", "n2"]);
    assert!(!text("ip", &["netns", "list"]).contains("pglab-n2"));
    assert!(!reachable(addresses[1]));
    assert!(status_line("n2").contains("stopped"));
    pgstrap_ok(&["lab", "start", "n2"]);
    assert_eq!(run_on(addresses[1], "cat /root/persist"), "kept");

    // isolate/heal: the link is cut, then restored.
    pgstrap_ok(&["lab", "isolate", "n3"]);
    assert!(status_line("n3").contains("isolated"));
    assert!(!reachable(addresses[2]));
    pgstrap_ok(&["lab", "heal", "n3"]);
    assert!(reachable(addresses[2]));

    // freeze/thaw: a hung host does not answer; thawed it does, same boot.
    pgstrap_ok(&["lab", "freeze", "n3"]);
    assert!(status_line("n3").contains("frozen"));
    assert!(!reachable(addresses[2]));
    pgstrap_ok(&["lab", "thaw", "n3"]);
    assert!(status_line("n3").contains("running"));
    assert_eq!(boot_id(addresses[2]), boot_ids[2]);

    // Egress: read the ruleset, never connect out.
    let slot = common::slot();
    let rules = text("nft", &["list", "table", "inet", &slot.nft_table()]);
    assert!(
        rules.contains(&format!("ip saddr {} counter", common::slot().range())),
        "{rules}"
    );
    assert!(rules.contains("drop comment \"lab egress\""), "{rules}");
    assert_eq!(forward(), "1");

    // down leaves nothing behind (and is idempotent).
    let started = Instant::now();
    pgstrap_ok(&["lab", "down"]);
    eprintln!("lab down: {:?}", started.elapsed());
    pgstrap_ok(&["lab", "down"]);
    // (Names of this lab's slot: a lab in another slot may run beside it.)
    let netns = text("ip", &["netns", "list"]);
    assert!(
        !netns.lines().any(|n| n.starts_with(&slot.netns_prefix())),
        "{netns}"
    );
    let links = text("ip", &["-br", "link"]);
    assert!(
        !links
            .lines()
            .any(|l| l.starts_with(&slot.veth_prefix()) || l.starts_with(&slot.bridge_prefix())),
        "{links}"
    );
    let tables = text("nft", &["list", "tables"]);
    assert!(
        !tables
            .lines()
            .any(|t| t.trim() == format!("table inet {}", slot.nft_table())),
        "{tables}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&format!("{}/", dir())), "{mounts}");
    for hierarchy in ["unified", "systemd"] {
        let cgroup = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(slot.cgroup_dir());
        assert!(!cgroup.exists(), "{}", cgroup.display());
    }
    // Forwarding: as before when this lab was the only one before and after; on while a lab in
    // another slot runs (its hosts reach the mirror through it).
    if !other_labs().is_empty() {
        assert_eq!(forward(), "1", "another lab runs: {:?}", other_labs());
    } else if alone_before {
        assert_eq!(forward(), forward_before);
    }
    assert!(pgstrap_ok(&["lab", "status"]).is_empty());
}

fn forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .expect("ip_forward")
        .trim()
        .to_string()
}

/// The nft tables of labs in other slots than this test's.
fn other_labs() -> Vec<String> {
    let ours = format!("table inet {}", common::slot().nft_table());
    text("nft", &["list", "tables"])
        .lines()
        .map(str::trim)
        .filter(|t| t.starts_with("table inet pgstrap_lab") && *t != ours)
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "end to end: needs root and takes over the lab; run with PGSTRAP_E2E=1 tests/run.sh"]
fn lab_up_recovers_a_half_torn_down_lab() {
    require_e2e();
    let _lab = take_lab();
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "1"]);
    // Kill the host's processes behind the lab's back (a crashed run): netns, veth, mount and
    // cgroup directories stay behind.
    let kill = Path::new("/sys/fs/cgroup/unified")
        .join(common::slot().cgroup_dir())
        .join("n1/cgroup.kill");
    std::fs::write(kill, "1").expect("cgroup.kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_line("n1").contains("running") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    pgstrap_ok(&["lab", "up", "--hosts", "1"]);
    assert!(reachable(&ip("n1")));
    pgstrap_ok(&["lab", "down"]);
}

/// Only one e2e test may own the lab at a time (cargo runs the tests of a file on threads of
/// one process); a test that failed does not poison it for the next.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_lab() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
