//! End-to-end: membership changes by editing the inventory, under a client writing through the
//! VIP. etcd 3 → 5 → 3 (the etcd leader among those removed), DB members 3 → 4 → 3 (the primary
//! removed), balancers 2 → 3 → 2 (the VIP holder removed), with etcd on the DB hosts. After each
//! step `etcdctl member list` and `patronictl list` on a host agree with the inventory and a
//! second apply changes nothing; at the end no acknowledged write is lost. Also: an unsafe
//! removal is refused with exit 2 before anything changes. Root and the lab: tests/run.sh.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{pgstrap, pgstrap_ok, require_e2e, run_on, DIR, ETCDCTL};

const VIP: &str = "10.77.0.250";

/// The lab inventory with these groups (hosts, ssh and apt as the lab wrote them).
fn write_inventory(etcd: &[&str], postgres: &[&str], balancers: &[&str]) -> String {
    let lab = std::fs::read_to_string(format!("{DIR}/inventory.yaml")).expect("lab inventory");
    let head = lab.split("clusters:").next().expect("inventory head");
    let list = |hosts: &[&str]| hosts.join(", ");
    let text = format!(
        "{head}clusters:\n  main:\n    etcd: [{}]\n    postgres: [{}]\n    balancers: [{}]\n    vip: {VIP}/24\n    networks: [10.77.0.0/24]\n",
        list(etcd),
        list(postgres),
        list(balancers)
    );
    let path = format!("{DIR}/members.yaml");
    std::fs::write(&path, text).expect("write inventory");
    // The secrets of the lab inventory, reused (same cluster).
    let _ = std::fs::copy(
        format!("{DIR}/inventory.secrets.yaml"),
        format!("{DIR}/members.secrets.yaml"),
    );
    path
}

fn apply(path: &str) -> String {
    let output = pgstrap(&["apply", "-i", path]);
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "apply failed:\n{text}");
    assert!(
        text.contains("verified: all"),
        "verification failed:\n{text}"
    );
    text
}

fn reapply_changes_nothing(path: &str) {
    let output = pgstrap(&["apply", "--no-verify", "-i", path]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("done: 0 change(s)"),
        "a second apply changed something:\n{text}"
    );
}

/// `etcdctl member list` and `patronictl list` on `on` show exactly these members.
fn members_agree(on: &str, etcd: &[&str], postgres: &[&str]) {
    // The members that stay (the host checked from may no longer run etcd).
    let endpoints: Vec<String> = etcd
        .iter()
        .map(|h| format!("https://10.77.0.1{}:2379", &h[1..]))
        .collect();
    let endpoints = endpoints.join(",");
    let list = run_on(
        on,
        &format!("{ETCDCTL} --endpoints={endpoints} member list -w json"),
    );
    let json: serde_json::Value = serde_json::from_str(&list).expect("etcdctl JSON");
    let names: BTreeSet<String> = json["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_owned())
        .collect();
    let want: BTreeSet<String> = etcd.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(names, want, "etcdctl member list: {list}");
    assert!(
        json["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["isLearner"].as_bool() != Some(true)),
        "a learner is left: {list}"
    );
    let patronictl = run_on(on, "patronictl -c /etc/patroni/config.yml list -f json");
    let json: serde_json::Value = serde_json::from_str(&patronictl).expect("patronictl JSON");
    let names: BTreeSet<String> = json
        .as_array()
        .expect("patronictl members")
        .iter()
        .map(|m| m["Member"].as_str().unwrap_or("").to_owned())
        .collect();
    let want: BTreeSet<String> = postgres.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(names, want, "patronictl list: {patronictl}");
}

fn etcd_leader(path: &str) -> String {
    let status = pgstrap_ok(&["status", "--json", "-i", path]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    json["clusters"][0]["etcd"]["leader"]
        .as_str()
        .expect("an etcd leader")
        .to_owned()
}

fn patroni_leader(path: &str) -> String {
    let status = pgstrap_ok(&["status", "--json", "-i", path]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    json["clusters"][0]["patroni"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["role"] == "leader")
        .and_then(|m| m["name"].as_str())
        .expect("a Patroni leader")
        .to_owned()
}

fn vip_holder(path: &str) -> String {
    let status = pgstrap_ok(&["status", "--json", "-i", path]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    json["clusters"][0]["vip"]["holders"][0]
        .as_str()
        .expect("a VIP holder")
        .to_owned()
}

#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn etcd_db_and_balancer_members_added_and_removed_under_load_lose_nothing() {
    require_e2e();
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "8"]);
    let path = write_inventory(&["n1", "n2", "n3"], &["n1", "n2", "n3"], &["n4", "n5"]);
    apply(&path);

    let writer = common::Writer::start(&path, VIP);

    // Grow: etcd 3 → 5 (n6, n7), DB 3 → 4 (n6), balancers 2 → 3 (n8).
    let started = Instant::now();
    let grown = write_inventory(
        &["n1", "n2", "n3", "n6", "n7"],
        &["n1", "n2", "n3", "n6"],
        &["n4", "n5", "n8"],
    );
    let plan = String::from_utf8_lossy(&pgstrap(&["plan", "-i", &grown]).stdout).into_owned();
    assert!(plan.contains("add n6 as a learner"), "plan: {plan}");
    assert!(plan.contains("add n7 as a learner"), "plan: {plan}");
    apply(&grown);
    eprintln!(
        "figure: grow etcd 3→5, DB 3→4, balancers 2→3 (installs on 3 new hosts + catch-up): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    members_agree(
        "10.77.0.11",
        &["n1", "n2", "n3", "n6", "n7"],
        &["n1", "n2", "n3", "n6"],
    );
    reapply_changes_nothing(&grown);

    // Shrink, removing the etcd leader, the primary and the VIP holder.
    let etcd_leader = etcd_leader(&grown);
    let primary = patroni_leader(&grown);
    let holder = vip_holder(&grown);
    let mut etcd: Vec<&str> = vec!["n1", "n2", "n3", "n6", "n7"];
    etcd.retain(|h| *h != etcd_leader);
    etcd.truncate(3);
    let mut postgres: Vec<&str> = vec!["n1", "n2", "n3", "n6"];
    postgres.retain(|h| *h != primary);
    postgres.truncate(3);
    let mut balancers: Vec<&str> = vec!["n4", "n5", "n8"];
    balancers.retain(|h| *h != holder);
    let started = Instant::now();
    let shrunk = write_inventory(&etcd, &postgres, &balancers);
    let text = apply(&shrunk);
    assert!(text.contains("handed over"), "{text}");
    eprintln!(
        "figure: shrink etcd 5→3 (leader {etcd_leader} removed), DB 4→3 (primary {primary} removed), balancers 3→2 (VIP holder {holder} removed): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let on = format!("10.77.0.1{}", &postgres[0][1..]);
    members_agree(&on, &etcd, &postgres);
    reapply_changes_nothing(&shrunk);

    writer.finish("membership changes under load");
    pgstrap_ok(&["lab", "down"]);
}

#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn removing_etcd_members_while_one_that_stays_is_down_is_refused_with_exit_2() {
    require_e2e();
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "7"]);
    let five = write_inventory(
        &["n1", "n2", "n3", "n6", "n7"],
        &["n1", "n2", "n3"],
        &["n4", "n5"],
    );
    apply(&five);
    // A member that stays is down (its host stays reachable: preflight needs it).
    run_on("10.77.0.13", "systemctl stop etcd");
    let three = write_inventory(&["n1", "n2", "n3"], &["n1", "n2", "n3"], &["n4", "n5"]);
    let output = pgstrap(&["apply", "-i", &three]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unsafe removal must exit 2"
    );
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("refusing to remove"), "{text}");
    // Nothing changed: still five members.
    let list = run_on(
        "10.77.0.11",
        &format!("{ETCDCTL} --endpoints=https://127.0.0.1:2379 member list"),
    );
    assert_eq!(list.lines().count(), 5, "{list}");
    pgstrap_ok(&["lab", "down"]);
}

/// An `apply` interrupted between `member add` (the new member registered as a learner) and the
/// new member's start leaves exactly the state made here by hand: `status` shows the learner, and
/// the next `apply` completes the change (starts it with the members it joins, promotes it, then
/// adds the next one) instead of adding it twice or starting a new cluster.
#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn an_etcd_member_added_but_never_started_is_completed_by_the_next_apply() {
    require_e2e();
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "6"]);
    let path = write_inventory(&["n1", "n2", "n3"], &["n1", "n2", "n3"], &["n6"]);
    apply(&path);

    // What an apply killed right after `member add` leaves behind.
    run_on(
        "10.77.0.11",
        &format!(
            "{ETCDCTL} --endpoints=https://127.0.0.1:2379 member add n4 --learner --peer-urls=https://10.77.0.14:2380"
        ),
    );
    let grown = write_inventory(
        &["n1", "n2", "n3", "n4", "n5"],
        &["n1", "n2", "n3"],
        &["n6"],
    );
    let status = String::from_utf8_lossy(&pgstrap(&["status", "-i", &grown]).stderr).into_owned()
        + &pgstrap_ok(&["status", "-i", &grown]);
    assert!(
        status.contains("LEARNER"),
        "status does not show the learner:\n{status}"
    );

    apply(&grown);
    members_agree(
        "10.77.0.11",
        &["n1", "n2", "n3", "n4", "n5"],
        &["n1", "n2", "n3"],
    );
    reapply_changes_nothing(&grown);
    pgstrap_ok(&["lab", "down"]);
}
