//! End-to-end: every failure drill on Debian 13 (all scenarios, on the shared cluster) and on a
//! fresh Debian 12 lab (the two that lost writes with Patroni 3.0.2's etcd3 client: isolate-primary and
//! power-cut-primary), with etcd co-located on the DB hosts (the README's layout). Each drill must
//! lose no acknowledged write, leave no member diverged, and converge (the former primary rejoins
//! as a streaming replica). Root and the lab: run by tests/run.sh. Figures are printed, never
//! asserted against a clock.

mod common;

use common::{inventory, pgstrap, require_e2e};

/// A cluster of `release` with the stack rolled out and verified; a second apply changes
/// nothing; `status` shows every host's release and the versions it runs. Debian 13: the shared
/// cluster (these drills leave it converged, each drill's own check). Debian 12: a fresh lab
/// from the bare base, rolled out here: the install path on Debian 12 is proven by this rollout.
fn cluster(release: &str) {
    if release == "13" {
        common::take(&common::MAIN);
    } else {
        common::fresh_lab(&["--release", release, "--hosts", "5"]);
        let started = std::time::Instant::now();
        let output = pgstrap(&["apply", "-i", &inventory()]);
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "rollout on Debian {release} failed"
        );
        assert!(
            text.contains("verified: all"),
            "verification failed on Debian {release}"
        );
        eprintln!(
            "figure: Debian {release}: rollout of 5 fresh hosts: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let started = std::time::Instant::now();
    let output = pgstrap(&["apply", "-i", &inventory()]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("done: 0 change(s)"),
        "a second apply changed something on Debian {release}"
    );
    eprintln!(
        "figure: Debian {release}: no-op re-apply with verification: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let status = common::status(&["--json", "-i", &inventory()]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let hosts = json["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 5);
    let postgresql = if release == "12" {
        "postgresql-15"
    } else {
        "postgresql-17"
    };
    for host in hosts {
        assert_eq!(host["release"], release, "{host}");
        if host["name"]
            .as_str()
            .is_some_and(|n| ["n1", "n2", "n3"].contains(&n))
        {
            assert!(host["packages"][postgresql].is_string(), "{host}");
            assert!(host["packages"]["patroni"].is_string(), "{host}");
        }
    }
}

/// Run one drill (`extra` arguments added) and print its figures; returns the JSON report and
/// whether the drill exited 0.
fn run_drill(
    release: &str,
    scenario: &str,
    duration: &str,
    extra: &[&str],
) -> (serde_json::Value, bool) {
    // Every host's journals of the drill, to explain a figure once the lab is gone.
    let journals = format!(
        "/tmp/pgstrap-e2e-journals/debian-{release}-{scenario}{}",
        extra.join("")
    );
    let inventory = inventory();
    let mut args = vec![
        "drill",
        scenario,
        "--duration",
        duration,
        "--json",
        "--journals",
        &journals,
        "-i",
        &inventory,
    ];
    args.extend_from_slice(extra);
    let output = pgstrap(&args);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("drill {scenario}: no JSON report ({e})"));
    eprintln!(
        "figure: Debian {release} drill {scenario} {}: {:.1} s without writes, leader {} → {}",
        extra.join(" "),
        report["longest_gap_s"].as_f64().unwrap_or(f64::NAN),
        report["leader_before"],
        report["leader_after"]
    );
    for client in report["clients"].as_array().expect("clients") {
        eprintln!(
            "figure:   client {}: {} acknowledged, {} lost, {} in doubt",
            client["client"], client["acknowledged"], client["lost"], client["in_doubt"]
        );
    }
    (report, output.status.success())
}

/// Lost writes of the clients named (or of all when `None`).
fn lost(report: &serde_json::Value, client: Option<&str>) -> u64 {
    report["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter(|c| client.is_none_or(|name| c["client"] == name))
        .map(|c| c["lost"].as_u64().expect("lost"))
        .sum()
}

/// No member diverged: none holds a row the leader lacks or is past the leader's position, and
/// every one streams (the former primary has rejoined).
fn assert_no_divergence(scenario: &str, report: &serde_json::Value) {
    for member in report["members"].as_array().expect("members") {
        assert_eq!(member["extra"], 0, "drill {scenario}: diverged {member}");
        assert_eq!(
            member["ahead_of_leader"], false,
            "drill {scenario}: {member}"
        );
        assert_eq!(member["streaming"], true, "drill {scenario}: {member}");
    }
    assert_eq!(report["members"].as_array().map(Vec::len), Some(3));
}

/// Run one drill; assert what every drill must hold; return its report.
fn drill(release: &str, scenario: &str, duration: &str, extra: &[&str]) -> serde_json::Value {
    let (report, exited_ok) = run_drill(release, scenario, duration, extra);
    assert_eq!(
        lost(&report, None),
        0,
        "drill {scenario}: acknowledged writes lost"
    );
    for member in report["members"].as_array().expect("members") {
        assert_eq!(member["missing"], 0, "drill {scenario}: {member}");
    }
    assert_no_divergence(scenario, &report);
    assert!(
        report["problems"].as_array().is_some_and(Vec::is_empty),
        "drill {scenario}: {}",
        report["problems"]
    );
    assert!(exited_ok, "drill {scenario} exited non-zero");
    report
}

#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn every_drill_on_debian_13_loses_nothing_and_converges() {
    require_e2e();
    cluster("13");
    // Faults that make Patroni fail over are held longer than its ttl (20 s), the others
    // briefly: the drill measures until the cluster has converged either way.
    for (scenario, seconds) in [
        ("kill-patroni", "10"),
        ("kill-postmaster", "10"),
        ("switchover", "5"),
        ("lose-one-etcd", "10"),
        ("lose-etcd-quorum", "15"),
        ("isolate-etcd-leader", "30"),
        ("hang-primary", "30"),
        ("isolate-primary", "30"),
        ("power-cut-primary", "30"),
    ] {
        let _ = drill("13", scenario, seconds, &[]);
    }

    // A client on the primary's own host keeps writing to it while it is cut off. With
    // asynchronous replication (the default) the isolated primary acknowledges writes until
    // Patroni demotes it, and they are gone once it rejoins: the drill must see that (the check
    // can fail), while the VIP's clients lose nothing and no member diverges.
    let (report, exited_ok) = run_drill("13", "isolate-primary", "30", &["--client-on-primary"]);
    assert!(
        lost(&report, Some("on-primary-host")) > 0,
        "asynchronous replication: the isolated primary's own client lost nothing?"
    );
    assert!(!exited_ok, "a drill that lost writes must exit non-zero");
    assert_eq!(lost(&report, Some("reconnecting")), 0);
    assert_eq!(lost(&report, Some("long-lived")), 0);
    assert_no_divergence("isolate-primary", &report);
    // With `synchronous_mode` a commit waits for a synchronous replica the isolated primary
    // cannot reach: nothing it acknowledged is lost.
    let output = pgstrap(&[
        "apply",
        "--no-verify",
        "--set",
        "patroni.synchronous_mode=true",
        "-i",
        &inventory(),
    ]);
    assert!(
        output.status.success(),
        "apply with synchronous_mode failed"
    );
    let report = drill("13", "isolate-primary", "30", &["--client-on-primary"]);
    let on_host = report["clients"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["client"] == "on-primary-host"))
        .expect("the on-host client's report");
    assert!(
        on_host["acknowledged"].as_u64() > Some(0),
        "the on-host client wrote nothing: {on_host}"
    );
    // synchronous_mode came from --set: the cluster is not the shared one any more.
    common::lab_down();
}

#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn isolated_and_power_cut_primaries_lose_nothing_on_debian_12() {
    require_e2e();
    cluster("12");
    // Patroni 3.0.2's etcd3 client overwrote the leader key after this partition (148 writes
    // lost); Debian 12 now runs Patroni's etcd v2 client (roles/patroni/debian-12.yaml).
    let _ = drill("12", "isolate-primary", "45", &[]);
    let _ = drill("12", "power-cut-primary", "30", &[]);
    common::lab_down();
}

#[test]
fn a_lab_only_drill_on_servers_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let inventory = dir.path().join("inventory.yaml");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/single-dc.yaml"),
        &inventory,
    )
    .expect("copy the example inventory");
    let output = pgstrap(&[
        "drill",
        "power-cut-primary",
        "--lab-dir",
        dir.path().to_str().expect("utf-8 path"),
        "-i",
        inventory.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs lab hosts"));
}
