//! End-to-end: the whole HA stack rolled out on fresh lab hosts with one command, verified with
//! real clients, idempotent, surviving a power cut of the primary; and a second layout (etcd on
//! its own hosts, balancers on the DB hosts; the DR layout's rollout is in tests/dr.rs).
//! `#[ignore]`d: runs only with `--ignored` and `PGSTRAP_E2E=1` (`tests/run.sh` as root; it takes over the lab). Figures are printed
//! (`figure: …`), never asserted against a clock.

mod common;

use std::time::{Duration, Instant};

use common::{dir, inventory, ip, pgstrap, pgstrap_ok, require_e2e, run_on, vip, ETCDCTL};

const POISON: &str = "P0ison";

fn stderr_of(args: &[&str]) -> (bool, String) {
    let output = pgstrap(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Every secret set to a recognisable poison value before the first apply.
fn poison_secrets(inventory: &str) {
    let store = inventory.replace(".yaml", ".secrets.yaml");
    let text = common::cli::secrets_yaml(|name, length| {
        format!("{POISON}{name}")
            .chars()
            .take(length.max(8))
            .collect()
    });
    common::cli::write_secrets(&store, text);
}

/// One write through the VIP's write port; Ok when it landed on a primary.
async fn write_once(
    vip: &str,
    secrets: &pgstrap::inventory::secrets::Secrets,
) -> Result<(), String> {
    let attempt = async {
        let client = pgstrap::stack::verify::connect(vip, 5000, secrets).await?;
        client
            .simple_query("CREATE TABLE IF NOT EXISTS failover_probe (at timestamptz); INSERT INTO failover_probe VALUES (now())")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn leader(inventory: &str) -> String {
    common::leader(inventory, "main").0
}

#[test]
#[ignore = "end to end: needs root and takes over the lab; run with PGSTRAP_E2E=1 tests/run.sh"]
fn rollout_end_to_end() {
    require_e2e();
    // Fresh hosts from the bare Debian base (this test proves the install path on Debian 13, as
    // the README's first command does): 3 DB hosts with etcd co-located, 2 balancers with a VIP.
    common::fresh_lab(&["--hosts", "5"]);
    poison_secrets(&inventory());

    // One command, with -v: everything printed is checked for secrets.
    let started = Instant::now();
    let (ok, output) = stderr_of(&["-v", "apply", "-i", &inventory()]);
    eprintln!(
        "figure: full rollout of 5 fresh hosts from the bare base (warm package cache): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "rollout failed");
    assert!(
        output.contains("verified: all"),
        "verification did not pass"
    );
    assert!(
        !output.contains(POISON),
        "a secret was printed during the rollout"
    );

    // The real clients on a host agree with pgstrap's status.
    let patronictl = run_on(
        &ip("n1"),
        "patronictl -c /etc/patroni/config.yml list -f json",
    );
    let members: serde_json::Value = serde_json::from_str(&patronictl).expect("patronictl JSON");
    let members = members.as_array().expect("members");
    assert_eq!(members.len(), 3);
    let leader_by_patronictl = members
        .iter()
        .find(|m| m["Role"] == "Leader")
        .and_then(|m| m["Member"].as_str())
        .expect("patronictl shows a leader")
        .to_owned();
    assert_eq!(leader(&inventory()), leader_by_patronictl);
    let health = run_on(
        &ip("n1"),
        &format!("{ETCDCTL} --endpoints=https://{}:2379,https://{}:2379,https://{}:2379 endpoint health 2>&1", ip("n1"), ip("n2"), ip("n3")),
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let status = common::status(&["--json", "-i", &inventory()]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let etcd = status["clusters"][0]["etcd"]["members"]
        .as_array()
        .expect("etcd members");
    assert!(etcd.iter().all(|m| m["healthy"] == true));
    // Right after verify, status shows the replay lag verify measured (issue 7: it showed
    // Patroni's 16777216 B from the DCS while verify measured 0).
    let members = status["clusters"][0]["patroni"]["members"]
        .as_array()
        .expect("patroni members");
    for replica in members.iter().filter(|m| m["role"] == "replica") {
        assert_eq!(replica["replication_state"], "streaming", "{replica}");
        assert!(
            replica["lag_bytes"]
                .as_u64()
                .is_some_and(|lag| lag < 1024 * 1024),
            "{replica}"
        );
    }
    assert_eq!(
        status["clusters"][0]["vip"]["holders"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Again: nothing changes, nothing restarts.
    let started = Instant::now();
    let (ok, output) = stderr_of(&["apply", "--no-verify", "-i", &inventory()]);
    eprintln!(
        "figure: no-op re-apply of 5 hosts: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ok);
    assert!(
        output.contains("done: 0 change(s)"),
        "second apply changed something"
    );
    assert!(!output.contains("handlers:"), "second apply fired handlers");
    // The preflight alone, on the running stack: its ports are held by its own services.
    let output = pgstrap(&["preflight", "--json", "-i", &inventory()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "preflight of a running stack"
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("preflight JSON");
    assert_eq!(json["ready"], true, "{json}");

    // A planned switchover.
    let before = leader(&inventory());
    let target = if before == "n2" { "n3" } else { "n2" };
    pgstrap_ok(&["switchover", "-i", &inventory(), "--to", target]);
    assert_eq!(leader(&inventory()), target);

    // Power cut of the primary: writes through the VIP resume on a new primary.
    let project =
        pgstrap::project::load(std::path::Path::new(&inventory()), &[]).expect("inventory");
    let secrets = project.secrets(false).expect("secrets");
    let runtime = common::cli::runtime();
    runtime
        .block_on(write_once(&vip(), &secrets))
        .expect("writes work before the cut");
    let killed = leader(&inventory());
    pgstrap_ok(&["lab", "kill", &killed]);
    let cut = Instant::now();
    let resumed = runtime.block_on(async {
        loop {
            if write_once(&vip(), &secrets).await.is_ok() {
                return Some(cut.elapsed());
            }
            if cut.elapsed() > Duration::from_secs(180) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let resumed = resumed.expect("writes through the VIP resumed on a new primary");
    eprintln!(
        "figure: writes resumed {:.1} s after a power cut of the primary",
        resumed.as_secs_f64()
    );
    assert_ne!(leader(&inventory()), killed);

    // It comes back as a replica.
    pgstrap_ok(&["lab", "start", &killed]);
    let back = Instant::now();
    loop {
        let (ok, output) = stderr_of(&["verify", "-i", &inventory()]);
        if ok {
            eprintln!(
                "figure: {killed} rejoined as a streaming replica {:.1} s after boot",
                back.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(240),
            "{killed} did not rejoin: {output}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // A parameter a reload covers: patched into Patroni's dynamic configuration, no restart.
    let work_mem = "--set=postgresql.parameters.work_mem=8MB";
    let (ok, output) = stderr_of(&["apply", "--no-verify", "-i", &inventory(), work_mem]);
    assert!(ok, "{output}");
    assert!(
        output.contains("dynamic configuration: postgresql.parameters.work_mem: (unset) → 8MB; PostgreSQL takes it by a reload"),
        "{output}"
    );
    assert!(!output.contains("waits for a restart"), "{output}");
    // A parameter that needs a restart: planned, then reported as pending...
    let connections = "--set=postgresql.parameters.max_connections=150";
    let plan = pgstrap_ok(&["plan", "-i", &inventory(), work_mem, connections]);
    // Old → new, and the restart it needs before anything changed.
    assert!(
        plan.contains("postgresql.parameters.max_connections: ")
            && plan.contains(" → 150; max_connections only at a restart of n1, n2, n3"),
        "{plan}"
    );
    let (ok, output) = stderr_of(&[
        "apply",
        "--no-verify",
        "-i",
        &inventory(),
        work_mem,
        connections,
    ]);
    assert!(ok, "{output}");
    assert!(output.contains("waits for a restart"), "{output}");
    // ...and applied by a rolling restart only when allowed; writes still land on a primary.
    let started = Instant::now();
    let (ok, output) = stderr_of(&[
        "apply",
        "--rolling-restart",
        "-i",
        &inventory(),
        work_mem,
        connections,
    ]);
    eprintln!(
        "figure: rolling restart of 3 members: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "{output}");
    assert!(
        output.contains("restarted replica") && output.contains("switched over"),
        "{output}"
    );
    assert!(output.contains("verified: all"), "{output}");
    let client = runtime
        .block_on(pgstrap::stack::verify::connect(&vip(), 5000, &secrets))
        .expect("connect");
    let shown = runtime
        .block_on(pgstrap::stack::verify::scalar(
            &client,
            "SHOW max_connections",
        ))
        .expect("show");
    assert_eq!(shown.as_deref(), Some("150"));
}

/// etcd on its own three hosts; HAProxy and keepalived on the three DB hosts.
#[test]
#[ignore = "end to end: needs root and takes over the lab; run with PGSTRAP_E2E=1 tests/run.sh"]
fn rollout_with_dedicated_etcd_and_balancers_on_the_db_hosts() {
    require_e2e();
    // A lab of its own (the subject is this layout's first rollout), from the preinstalled image.
    common::fresh_lab(&["--preinstalled", "--hosts", "6"]);
    let lab = std::fs::read_to_string(inventory()).expect("lab inventory");
    // Keep the lab's ssh, apt and hosts; replace the clusters.
    let head = lab.split("clusters:").next().expect("inventory head");
    let inventory = format!(
        "{head}clusters:\n  pay:\n    etcd: [n1, n2, n3]\n    postgres: [n4, n5, n6]\n    balancers: [n4, n5, n6]\n    vip: {}/24\n    networks: [{}]\n",
        common::vip(),
        common::network()
    );
    let path = format!("{}/dedicated-etcd.yaml", dir());
    std::fs::write(&path, inventory).expect("write inventory");
    let started = Instant::now();
    let (ok, output) = stderr_of(&["apply", "-i", &path]);
    eprintln!(
        "figure: rollout with dedicated etcd (6 fresh hosts, preinstalled): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "rollout failed");
    assert!(output.contains("verified: all"));
    let (ok, output) = stderr_of(&["apply", "--no-verify", "-i", &path]);
    assert!(ok && output.contains("done: 0 change(s)"));
    common::lab_down();
}
