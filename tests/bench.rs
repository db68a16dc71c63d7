//! Benchmarks on lab hosts (not a timed test: it prints figures and asserts only correctness).
//! `#[ignore]`d; run with `scripts/bench.sh` (root; takes over the lab): engine figures (connect +
//! facts + no-op apply on 3 and 6 hosts, 200 sequential commands over one connection, plan fan-out
//! to 100 hosts) and rollout figures (full rollout of fresh hosts with a warm package cache, the
//! floor it compares to, no-op re-apply).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cli::runtime;
use common::{dir, pgstrap_ok};
use pgstrap::connect::{RemoteCommand, Session};
use pgstrap::exec::{self, Options};
use pgstrap::inventory::secrets::Masker;

/// The benchmarks are `#[ignore]`d; `scripts/bench.sh` runs them with `--ignored` and
/// `PGSTRAP_BENCH=1`. Selected without it (`cargo test -- --ignored`), a benchmark fails instead
/// of taking over this machine's lab unasked.
fn require_bench() {
    assert!(
        std::env::var("PGSTRAP_BENCH").as_deref() == Ok("1"),
        "this benchmark takes over the lab on this machine: run scripts/bench.sh (root)"
    );
}

fn figure(what: &str, value: impl std::fmt::Display) {
    println!("figure: {what}: {value}");
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The lab inventory with its clusters removed: only the `common` role applies. `ssh_options`
/// go under `ssh.options`.
fn hosts_only_inventory(ssh_options: &str) -> std::path::PathBuf {
    let lab = std::fs::read_to_string(format!("{}/inventory.yaml", dir())).expect("lab inventory");
    let head = lab.split("clusters:").next().expect("head");
    let head = if ssh_options.is_empty() {
        head.to_owned()
    } else {
        head.replacen(
            "ssh:\n",
            &format!("ssh:\n  options: {{{ssh_options}}}\n"),
            1,
        )
    };
    let path = Path::new(&dir()).join("hosts-only.yaml");
    std::fs::write(&path, format!("{head}clusters: {{}}\n")).expect("write");
    path
}

fn session(
    project: &pgstrap::project::Project,
    host: &str,
    rt: &tokio::runtime::Runtime,
) -> Session {
    let host = &project.inventory.hosts[host];
    let target = pgstrap::exec::target(&project.inventory, host);
    rt.block_on(Session::connect(&target, Masker::default()))
        .expect("connect")
}

#[test]
#[ignore = "benchmark: needs root and takes over the lab; run scripts/bench.sh"]
fn bench_engine_on_lab_hosts() {
    require_bench();
    let rt = runtime();
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "6"]);
    let path = hosts_only_inventory("");
    let project = pgstrap::project::load(&path, &[]).expect("inventory");
    let first = rt
        .block_on(exec::apply(&project, Options::default()))
        .expect("apply");
    assert_eq!(first.exit_code(), 0);
    for n in [3usize, 6] {
        let hosts: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let options = Options {
            hosts: Some(hosts),
            ..Options::default()
        };
        let started = Instant::now();
        let report = rt.block_on(exec::apply(&project, options)).expect("apply");
        let elapsed = started.elapsed();
        assert_eq!(report.total_changes(), 0);
        let slowest =
            |f: fn(&exec::HostReport) -> u64| report.hosts.iter().map(f).max().unwrap_or(0);
        figure(
            &format!("connect + facts + no-op apply, {n} lab hosts"),
            format!(
                "{} (slowest connect {} ms, slowest facts {} ms)",
                ms(elapsed),
                slowest(|h| h.timings.connect_ms),
                slowest(|h| h.timings.facts_ms)
            ),
        );
    }
    let one = session(&project, "n1", &rt);
    let started = Instant::now();
    rt.block_on(async {
        for _ in 0..200 {
            one.run(&RemoteCommand::new(&["true"])).await.expect("true");
        }
    });
    let elapsed = started.elapsed();
    figure(
        "200 sequential remote commands over one connection",
        format!(
            "{} ({:.1} ms each)",
            ms(elapsed),
            elapsed.as_secs_f64() * 1000.0 / 200.0
        ),
    );
    rt.block_on(one.close());

    // Plan fan-out: 100 idle lab hosts.
    let started = Instant::now();
    pgstrap_ok(&["lab", "up", "--hosts", "100"]);
    figure(
        "lab up from 6 to 100 hosts",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    // Both ends of every SSH handshake run on this machine's 2 cores: the key exchange dominates.
    for (kex, options) in [
        ("OpenSSH's default key exchange (sntrup761x25519)", ""),
        (
            "KexAlgorithms: curve25519-sha256",
            "KexAlgorithms: curve25519-sha256",
        ),
    ] {
        let path = hosts_only_inventory(options);
        let project = pgstrap::project::load(&path, &[]).expect("inventory");
        let options = Options {
            parallel: 100,
            ..Options::default()
        };
        let started = Instant::now();
        let report = rt.block_on(exec::plan(&project, options)).expect("plan");
        let elapsed = started.elapsed();
        assert_eq!(report.hosts.len(), 100);
        assert_eq!(report.exit_code(), 0, "every host reachable");
        figure(
            &format!("plan fan-out to 100 lab hosts, {kex}"),
            ms(elapsed),
        );
    }
    pgstrap_ok(&["lab", "down"]);
}

#[test]
#[ignore = "benchmark: needs root and takes over the lab; run scripts/bench.sh"]
fn bench_rollout_on_lab_hosts() {
    require_bench();
    let rt = runtime();
    let inventory = format!("{}/inventory.yaml", dir());

    // The floor: the same package transaction on 5 fresh hosts at once, then initdb and a
    // base backup of that new cluster, measured alone.
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "5"]);
    let project = pgstrap::project::load(Path::new(&inventory), &[]).expect("inventory");
    let secrets = project.secrets(true).expect("secrets");
    project.persist(&secrets).expect("secrets stored");
    let desired = pgstrap::render::desired_state(&project, &secrets, None).expect("desired");
    let started = Instant::now();
    rt.block_on(async {
        let installs = desired.hosts.iter().map(|state| {
            let host = &project.inventory.hosts[&state.host];
            let target = pgstrap::exec::target(&project.inventory, host);
            let packages = state.packages();
            async move {
                let session = Session::connect(&target, Masker::default()).await.expect("connect");
                // Package-manager configuration first, as the engine does.
                session
                    .run(&RemoteCommand::script(
                        "mkdir -p /etc/postgresql-common/createcluster.d && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/00-bench.conf && echo 'Acquire::http::Proxy \"http://10.77.0.1:3142\";' > /etc/apt/apt.conf.d/90bench",
                        &[] as &[&str],
                        "configure apt",
                    ))
                    .await
                    .expect("configure");
                let facts = pgstrap::facts::Facts::default();
                let planned = pgstrap::ops::plan_packages(&packages, &facts);
                for command in &planned.change().expect("packages to install").commands {
                    session.run(command).await.expect("install");
                }
                session.close().await;
            }
        });
        futures::future::join_all(installs).await;
    });
    let install = started.elapsed();
    let n1 = session(&project, "n1", &rt);
    let timed = |script: &str| {
        let started = Instant::now();
        rt.block_on(n1.run(&RemoteCommand::script(script, &[] as &[&str], "bench step")))
            .expect("bench step");
        started.elapsed()
    };
    // The major the host's release installs (15 on Debian 12, 17 on Debian 13).
    const BIN: &str = "bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); ";
    let initdb = timed(&format!(
        "{BIN}runuser -u postgres -- $bin/initdb -k -D /var/lib/postgresql/floor >/dev/null"
    ));
    timed(&format!("{BIN}runuser -u postgres -- $bin/pg_ctl -D /var/lib/postgresql/floor -o '-p 5499 -k /tmp' -l /tmp/floor.log start -w >/dev/null"));
    let basebackup = timed(&format!("{BIN}runuser -u postgres -- $bin/pg_basebackup -h /tmp -p 5499 -D /var/lib/postgresql/floor-copy -X stream -c fast"));
    rt.block_on(n1.close());
    figure(
        "floor: package installs on 5 hosts in parallel",
        format!("{:.1} s", install.as_secs_f64()),
    );
    figure("floor: initdb", ms(initdb));
    figure("floor: pg_basebackup of the new cluster", ms(basebackup));
    figure(
        "floor: total (installs + initdb + basebackup)",
        format!("{:.1} s", (install + initdb + basebackup).as_secs_f64()),
    );

    // The rollout on fresh hosts (warm package cache: the floor just filled it).
    pgstrap_ok(&["lab", "down"]);
    pgstrap_ok(&["lab", "up", "--hosts", "5"]);
    let started = Instant::now();
    pgstrap_ok(&["apply", "-i", &inventory]);
    figure(
        "full rollout, 5 fresh lab hosts, warm cache",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    for (what, args) in [
        (
            "no-op re-apply, 5 hosts, with verification",
            vec!["apply", "-i", inventory.as_str()],
        ),
        (
            "no-op re-apply, 5 hosts, --no-verify",
            vec!["apply", "--no-verify", "-i", inventory.as_str()],
        ),
    ] {
        let started = Instant::now();
        let out = common::pgstrap(&args);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("done: 0 change(s)"));
        figure(what, ms(started.elapsed()));
    }
    pgstrap_ok(&["lab", "down"]);
}
