//! End-to-end: the DR lifecycle on the lab (5 hosts in dc1: cluster `main` with a VIP; 5 in dc2:
//! its standby cluster `dr` with its own VIP), one rolled-out cluster shared in this order: its
//! rollout (dr streams from main); a planned `dr promote` under a client writing through main's
//! VIP (every acknowledged write is on the promoted side; the old side ends as its standby
//! cluster, streaming through its slot; `apply` refuses until the inventory says so, then changes
//! nothing the second time; the fail back is the same command); then an emergency promotion with
//! the whole primary side powered off. Root and the lab: tests/run.sh.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{inventory, ip, pgstrap, pgstrap_ok, require_e2e, run_on, vip, vip_of};
use pgstrap::inventory::secrets::Secrets;
use pgstrap::stack::drill::client;

/// The lab inventory with `standby` as the standby cluster of `primary`.
fn direction(primary: &str, standby: &str) {
    let text = std::fs::read_to_string(inventory()).expect("lab inventory");
    let mut out = String::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':') {
            current = line.trim().trim_end_matches(':').to_owned();
        }
        if line.trim_start().starts_with("standby_of:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if current == standby && line.trim_start().starts_with("datacenter:") {
            out.push_str(&format!("    standby_of: {primary}\n"));
        }
    }
    std::fs::write(inventory(), out).expect("write inventory");
}

/// Promote `standby` while a client writes through `write_to`; return the writes acknowledged.
fn promote_under_load(
    runtime: &tokio::runtime::Runtime,
    secrets: &Secrets,
    write_to: (&str, u16),
    standby: &str,
) -> (BTreeSet<u64>, serde_json::Value) {
    let target = client::Target {
        address: write_to.0.into(),
        port: write_to.1,
        secrets: secrets.clone(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    };
    let writer = runtime.block_on(async {
        client::start(
            target,
            client::Style::Reconnecting,
            Arc::new(AtomicU64::new(1_000_000 * u64::from(standby == "main") + 1)),
            Instant::now(),
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let output = pgstrap(&[
        "dr",
        "promote",
        "--cluster",
        standby,
        "--json",
        "-i",
        &inventory(),
    ]);
    assert!(output.status.success(), "dr promote {standby} failed");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    std::thread::sleep(Duration::from_secs(2));
    let log = runtime.block_on(writer.stop());
    eprintln!(
        "figure: dr promote {standby}: {:.1} s without writes",
        report["seconds_without_writes"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    (log.acknowledged.iter().map(|(id, _)| *id).collect(), report)
}

/// The drill rows on a host's PostgreSQL (as postgres over SSH).
fn rows_on(address: &str) -> BTreeSet<u64> {
    run_on(
        address,
        "runuser -u postgres -- psql -XAtq -c 'SELECT id FROM pgstrap_drill.writes'",
    )
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

/// A disaster-recovery standby cluster in a second datacenter: its own etcd, Patroni
/// `standby_cluster` streaming through a permanent slot on the primary side, the primary side's
/// writes visible on every standby host; a second apply changes nothing. Its rollout is the
/// shared DR cluster the lifecycle tests below take (it runs first: tests/run.sh runs a file's
/// tests in the order they are written).
#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn rollout_with_a_dr_standby_cluster_in_a_second_datacenter() {
    require_e2e();
    common::fresh_lab(common::DR.up);
    let started = Instant::now();
    let output = pgstrap(&["apply", "-i", &inventory()]);
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!(
        "figure: rollout of a primary cluster and its DR standby cluster (10 fresh hosts, \
         preinstalled): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(output.status.success(), "rollout failed:\n{text}");
    assert!(text.contains("verified: all"), "{text}");
    assert!(text.contains("standby cluster dr streams from slot standby_dr"));
    assert!(text.contains("standby cluster dr host d3 has the write"));
    let patronictl = run_on(
        &ip("d1"),
        "patronictl -c /etc/patroni/config.yml list -f json",
    );
    assert!(patronictl.contains("Standby Leader"), "{patronictl}");
    let output = pgstrap(&["apply", "--no-verify", "-i", &inventory()]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("done: 0 change(s)"),
        "{text}"
    );
    // A rolling restart of the standby cluster: its replicas, then its standby leader in place
    // (no switchover: it takes no writes), streaming from the primary side again after it.
    let started = Instant::now();
    let restart: serde_json::Value = serde_json::from_str(&pgstrap_ok(&[
        "restart",
        "--cluster",
        "dr",
        "--yes",
        "--json",
        "-i",
        &inventory(),
    ]))
    .expect("restart JSON");
    eprintln!(
        "figure: rolling restart of the DR standby cluster: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let steps = restart["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{restart}");
    assert!(
        steps[2]
            .as_str()
            .is_some_and(|s| s.starts_with("restarted standby leader")),
        "{restart}"
    );
    let output = pgstrap(&["verify", "-i", &inventory()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    common::give_back(&common::DR);
}

#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn planned_promotion_and_fail_back_lose_no_acknowledged_write() {
    let (runtime, secrets, main_vip) = dr_lab();

    // Promote dr while writing through main's VIP.
    let (acknowledged, _) = promote_under_load(&runtime, &secrets, (&vip(), 5000), "dr");
    let dr_leader = leader_address("dr");
    let present = rows_on(&dr_leader);
    let lost = acknowledged.difference(&present).count();
    assert_eq!(lost, 0, "acknowledged writes lost in the promotion");
    // The old side is a standby cluster now, its slot on the dr side active.
    let patronictl = run_on(
        &ip("n1"),
        "patronictl -c /etc/patroni/config.yml list -f json",
    );
    assert!(patronictl.contains("Standby Leader"), "{patronictl}");

    // apply refuses until the inventory says so; then it changes nothing the second time.
    let output = pgstrap(&["apply", "-i", &inventory()]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "apply must refuse to reverse a promotion"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("standby_of: dr"));
    direction("dr", "main");
    let output = pgstrap(&["apply", "-i", &inventory()]);
    assert!(output.status.success(), "apply after the inventory edit");
    assert!(String::from_utf8_lossy(&output.stderr).contains("verified: all"));
    let output = pgstrap(&["apply", "--no-verify", "-i", &inventory()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("done: 0 change(s)"));

    // Fail back: the same command for main, writing through dr's VIP (both VIPs serve their new
    // roles).
    let (acknowledged, _) = promote_under_load(&runtime, &secrets, (&vip_of(1), 5000), "main");
    let main_leader = leader_address("main");
    let present = rows_on(&main_leader);
    assert_eq!(
        acknowledged.difference(&present).count(),
        0,
        "writes lost in the fail back"
    );
    direction("main", "dr");
    let output = pgstrap(&["apply", "-i", &inventory()]);
    assert!(output.status.success(), "apply after the fail back");
    assert!(String::from_utf8_lossy(&output.stderr).contains("verified: all"));
    let _ = runtime.block_on(client::cleanup(&main_vip));
    // Back as it was: the next test takes it.
    let output = pgstrap(&["apply", "--no-verify", "-i", &inventory()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("done: 0 change(s)"));
    common::give_back(&common::DR);
}

/// The DR lab, 5 + 5 hosts (main and its standby cluster dr, each with balancers and a VIP),
/// rolled out: the shared one on Debian 13, a fresh one on another release; and a write target
/// through main's VIP with its drill table ready.
fn dr_lab() -> (tokio::runtime::Runtime, Secrets, client::Target) {
    require_e2e();
    // PGSTRAP_LAB_RELEASE=12 runs the DR lifecycle on Debian 12 (default: the lab's, 13).
    let release = std::env::var("PGSTRAP_LAB_RELEASE").unwrap_or_else(|_| "13".into());
    if release == "13" {
        common::take(&common::DR);
    } else {
        let mut up = vec!["--release", &release];
        up.extend_from_slice(common::DR.up);
        common::fresh_lab(&up);
        pgstrap_ok(&["apply", "-i", &inventory()]);
    }
    let project =
        pgstrap::project::load(std::path::Path::new(&inventory()), &[]).expect("inventory");
    let secrets = project.secrets(false).expect("secrets");
    let runtime = common::cli::runtime();
    let main_vip = client::Target {
        address: vip(),
        port: 5000,
        secrets: secrets.clone(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    };
    runtime
        .block_on(client::prepare(&main_vip))
        .expect("drill table");
    (runtime, secrets, main_vip)
}

/// The address of the member of `cluster` that leads it (status --json).
fn leader_address(cluster: &str) -> String {
    common::leader(&inventory(), cluster).1
}

/// `ssh` to a lab host until it answers (after `lab start`).
fn wait_for_ssh(address: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if common::ssh(address, &common::known_hosts(), "true")
            .status
            .success()
        {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("{address} did not come back");
}

/// Emergency promotion: the whole primary side loses power, `dr promote --emergency-may-lose-data` promotes the
/// standby side from what it replayed and fences the old side; when the old side's hosts come
/// back they do not start Patroni (no write accepted through its VIP, `status` shows the fence);
/// `apply` refuses until the inventory names the old side a standby of the promoted one, then
/// rebuilds it as such (its diverged data moved aside, kept) and lifts the fence; every write the
/// new primary acknowledged is on the rebuilt side; a second apply changes nothing.
#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn emergency_promotion_fences_the_old_side_and_apply_rebuilds_it() {
    let (runtime, secrets, main_vip) = dr_lab();
    let writer = runtime.block_on(async {
        client::start(
            main_vip.clone(),
            client::Style::Reconnecting,
            Arc::new(AtomicU64::new(1)),
            Instant::now(),
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let log = runtime.block_on(writer.stop());
    let written: BTreeSet<u64> = log.acknowledged.iter().map(|(id, _)| *id).collect();
    assert!(!written.is_empty(), "nothing written through main's &vip()");
    // The standby side has them before the disaster (a planned test of the window, not of lag).
    let dr_standby_leader = leader_address("dr");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !written.is_subset(&rows_on(&dr_standby_leader)) {
        assert!(Instant::now() < deadline, "dr did not replay main's writes");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The whole primary side loses power.
    for host in ["n1", "n2", "n3", "n4", "n5"] {
        pgstrap_ok(&["lab", "kill", host]);
    }
    // The planned promotion needs the primary side; --emergency-may-lose-data does not.
    let output = pgstrap(&["dr", "promote", "--cluster", "dr", "-i", &inventory()]);
    assert!(
        !output.status.success(),
        "a planned promotion without the primary side"
    );
    let output = pgstrap(&[
        "dr",
        "promote",
        "--emergency-may-lose-data",
        "--cluster",
        "dr",
        "--json",
        "-i",
        &inventory(),
    ]);
    assert!(
        output.status.success(),
        "dr promote --emergency-may-lose-data failed"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    assert_eq!(report["fence"]["fenced"], "main", "{report}");
    assert!(
        !report["fence"]["replayed_lsn"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{report}"
    );
    eprintln!(
        "figure: dr promote --emergency-may-lose-data: {:.1} s until writes land on dr",
        report["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    let dr_leader = leader_address("dr");
    assert!(
        written.is_subset(&rows_on(&dr_leader)),
        "replayed writes missing on dr"
    );
    // A write through the promoted side's VIP.
    let inserted = runtime.block_on(async {
        let client = pgstrap::stack::verify::connect(&vip_of(1), 5000, &secrets).await?;
        pgstrap::stack::verify::scalar(
            &client,
            "INSERT INTO pgstrap_drill.writes (id, client) VALUES (999999999, 'after') RETURNING id",
        )
        .await
    });
    assert_eq!(
        inserted,
        Ok(Some("999999999".into())),
        "a write through dr's &vip()"
    );

    // The old side comes back, every host at once (etcd waits for its peers): fenced.
    let starts: Vec<_> = ["n1", "n2", "n3", "n4", "n5"]
        .into_iter()
        .map(|host| std::thread::spawn(move || pgstrap_ok(&["lab", "start", host])))
        .collect();
    for start in starts {
        start.join().expect("lab start");
    }
    for address in [&ip("n1"), &ip("n2"), &ip("n3"), &ip("n4"), &ip("n5")] {
        wait_for_ssh(address);
    }
    // Long enough for Patroni to have taken the leadership, had it started.
    std::thread::sleep(Duration::from_secs(20));
    for address in [&ip("n1"), &ip("n2"), &ip("n3")] {
        let active = common::ssh(
            address,
            &common::known_hosts(),
            "systemctl is-active patroni",
        );
        let state = String::from_utf8_lossy(&active.stdout).trim().to_owned();
        assert_ne!(
            state, "active",
            "{address}: Patroni runs on a fenced cluster"
        );
    }
    let journal = run_on(
        &ip("n1"),
        "journalctl -u patroni --no-pager -b | grep -c 'is fenced' || true",
    );
    assert!(
        journal.trim() != "0",
        "no fence message in Patroni's journal"
    );
    let through_old_vip = runtime.block_on(async {
        let client = pgstrap::stack::verify::connect(&vip(), 5000, &secrets).await?;
        pgstrap::stack::verify::scalar(
            &client,
            "INSERT INTO pgstrap_drill.writes (id, client) VALUES (888888888, 'fenced') RETURNING id",
        )
        .await
    });
    assert!(
        through_old_vip.is_err(),
        "a write through the fenced side's VIP was accepted"
    );
    let status = common::status(&["--json", "-i", &inventory()]);
    let json: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let main = json["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == "main")
        .expect("main in status");
    assert_eq!(
        main["fence"]["by"], "dr",
        "status does not show the fence: {main}"
    );

    // apply refuses until the inventory says what happened, then rebuilds the old side.
    let output = pgstrap(&["apply", "-i", &inventory()]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "apply must refuse to reverse a promotion"
    );
    direction("dr", "main");
    let started = Instant::now();
    let output = pgstrap(&["apply", "-i", &inventory()]);
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "apply rebuilding the fenced side:\n{text}"
    );
    assert!(text.contains("verified: all"), "{text}");
    eprintln!(
        "figure: apply rebuilding the fenced old side as a standby cluster: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let kept = run_on(&ip("n1"), "ls -d /var/lib/postgresql/*/main.fenced-*");
    assert!(!kept.is_empty(), "the fenced data directory was not kept");
    let main_leader = leader_address("main");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rows_on(&main_leader).contains(&999_999_999) {
        assert!(
            Instant::now() < deadline,
            "the rebuilt side lacks dr's write"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let output = pgstrap(&["apply", "--no-verify", "-i", &inventory()]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("done: 0 change(s)"),
        "a second apply changed something"
    );
    common::lab_down();
}
