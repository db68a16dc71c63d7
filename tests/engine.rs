//! End-to-end tests of the engine (plan/apply over real SSH). They are `#[ignore]`d (`cargo test`
//! lists them as ignored); `tests/run.sh` runs them as root with `--ignored` and `PGSTRAP_E2E=1`:
//!
//! - `loopback_*`: a private sshd on 127.0.0.1–3 (started here, its own host key and config in a
//!   temp dir; needs `/usr/sbin/sshd` and root) and a desired state that only touches that temp dir.
//! - `lab_*`: three fresh `pgstrap lab` hosts, brought up by the test itself (`pgstrap lab down`,
//!   `pgstrap lab up --hosts 3`): the `common` and `pgbouncer` roles on n1–n3.
//!
//! `bench_engine_figures` is a benchmark, not a test: `scripts/bench-engine.sh` runs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use pgstrap::connect::Target;
use pgstrap::exec::{self, HostStatus, Mode, Options, Report};
use pgstrap::inventory::secrets::Masker;
use pgstrap::state::{DesiredState, Directory, HostState, ManagedFile, RoleState};

mod common;

use common::cli::runtime;
use common::{inventory, pgstrap_ok, require_e2e};

const POISON: &str = "poison-Password-7Q2";

// ------------------------------------------------------------------------------------------------
// Loopback sshd

struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn start_sshd(port: u16) -> Sshd {
    let dir = tempfile::Builder::new()
        .prefix("pgstrap-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    keygen(&d.join("host"));
    keygen(&d.join("client"));
    std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
    let host_key = std::fs::read_to_string(d.join("host.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let mut known = String::new();
    for i in 1..=3 {
        known.push_str(&format!("[127.0.0.{i}]:{port} {}\n", host_key.join(" ")));
    }
    std::fs::write(d.join("known_hosts"), known).unwrap();
    let config = format!(
        "ListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nListenAddress 127.0.0.3\nPort {port}\n\
         HostKey {0}/host\nPidFile {0}/sshd.pid\nAuthorizedKeysFile {0}/authorized_keys\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         UsePAM no\nStrictModes no\nMaxSessions 50\nMaxStartups 200\n",
        d.display()
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-f"])
        .arg(d.join("sshd_config"))
        .spawn()
        .expect("start /usr/sbin/sshd (apt-get install openssh-server)");
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.3", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Sshd { child, dir, port }
}

fn target(sshd: &Sshd, i: u8, port: u16) -> Target {
    Target {
        host: format!("h{i}"),
        address: format!("127.0.0.{i}"),
        user: "root".into(),
        port,
        identity_file: Some(sshd.dir.path().join("client")),
        known_hosts: Some(sshd.dir.path().join("known_hosts")),
        become_root: false,
        connect_timeout: 3,
        options: vec![],
    }
}

fn file(path: PathBuf, content: &str, sensitive: bool) -> ManagedFile {
    use sha2::Digest;
    ManagedFile {
        path: path.display().to_string(),
        template: "test".into(),
        template_origin: "test".into(),
        content: content.into(),
        sha256: hex::encode(sha2::Sha256::digest(content.as_bytes())),
        owner: "root".into(),
        group: "root".into(),
        mode: if sensitive { 0o600 } else { 0o640 },
        sensitive,
        identity: None,
        notify: vec![],
    }
}

/// Each host gets its own subdirectory of `root` (they are all this machine).
fn desired(root: &Path, hosts: &[u8], setting: &str) -> DesiredState {
    let hosts = hosts
        .iter()
        .map(|i| {
            let base = root.join(format!("h{i}"));
            let role = RoleState {
                role: "common".into(),
                cluster: None,
                phase: 10,
                packages: vec![],
                directories: vec![Directory {
                    path: base.join("conf").display().to_string(),
                    owner: "root".into(),
                    group: "root".into(),
                    mode: 0o750,
                }],
                files: vec![
                    file(
                        base.join("conf/app.conf"),
                        &format!("# managed\nsetting = {setting}\n"),
                        false,
                    ),
                    file(
                        base.join("conf/secret.txt"),
                        &format!("password={POISON}\n"),
                        true,
                    ),
                    file(base.join("deep/er/x.conf"), "x\n", false),
                ],
                sysctls: vec![],
                services: vec![],
                handlers: vec![],
                checks: vec![],
                ports: vec![],
                before_packages: vec![],
            };
            HostState {
                host: format!("h{i}"),
                address: format!("127.0.0.{i}"),
                roles: vec![role],
            }
        })
        .collect();
    DesiredState {
        hosts,
        masker: Masker::new(vec![POISON.into()]),
    }
}

fn run(
    sshd: &Sshd,
    root: &Path,
    hosts: &[u8],
    setting: &str,
    mode: Mode,
    bad: Option<u8>,
) -> Report {
    let targets = hosts
        .iter()
        .map(|&i| {
            target(
                sshd,
                i,
                if Some(i) == bad {
                    sshd.port + 1
                } else {
                    sshd.port
                },
            )
        })
        .collect();
    runtime().block_on(exec::run(
        desired(root, hosts, setting),
        targets,
        mode,
        Options::default(),
    ))
}

fn changed_subjects(report: &Report, host: &str) -> Vec<String> {
    report
        .host(host)
        .unwrap()
        .changes
        .iter()
        .map(|c| c.subject.clone())
        .collect()
}

#[test]
#[ignore = "end to end: needs root and /usr/sbin/sshd (a private sshd on 127.0.0.1-3); run with PGSTRAP_E2E=1 tests/run.sh"]
fn loopback_apply_converges_then_reports_zero_changes_and_drift() {
    require_e2e();
    let sshd = start_sshd(2231);
    let root = sshd.dir.path().join("managed");
    let hosts = [1, 2, 3];

    let first = run(&sshd, &root, &hosts, "one", Mode::Apply, None);
    assert_eq!(first.exit_code(), 0, "{first:#?}");
    for h in ["h1", "h2", "h3"] {
        assert_eq!(first.host(h).unwrap().status, HostStatus::Changed);
        assert_eq!(changed_subjects(&first, h).len(), 4);
    }
    let secret = root.join("h1/conf/secret.txt");
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        format!("password={POISON}\n")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(root.join("h1/conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    // guards: the poison secret never reaches the report (JSON output).
    assert!(!serde_json::to_string(&first).unwrap().contains(POISON));

    let second = run(&sshd, &root, &hosts, "one", Mode::Apply, None);
    assert_eq!(
        second.total_changes(),
        0,
        "second apply must change nothing: {second:#?}"
    );

    // One setting changes exactly the file that depends on it, with a masked diff.
    let plan = run(&sshd, &root, &hosts, "two", Mode::Plan, None);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            changed_subjects(&plan, h),
            [root
                .join(format!("{h}/conf/app.conf"))
                .display()
                .to_string()]
        );
        let diff = plan.host(h).unwrap().changes[0].diff.clone().unwrap();
        assert!(diff.contains("-setting = one\n+setting = two"), "{diff}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("h1/conf/app.conf")).unwrap(),
        "# managed\nsetting = one\n",
        "plan changes nothing"
    );

    // A manual edit on one host shows as drift on that host only; mode drift is fixed in place.
    std::fs::write(
        root.join("h2/conf/app.conf"),
        "# managed\nsetting = hand-edited\n",
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("h3/deep/er/x.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let drift = run(&sshd, &root, &hosts, "one", Mode::Plan, None);
    assert!(changed_subjects(&drift, "h1").is_empty());
    assert_eq!(
        drift.host("h2").unwrap().changes[0].summary,
        "content changed"
    );
    assert_eq!(
        drift.host("h3").unwrap().changes[0].summary,
        "mode 0666 → 0640"
    );
    let fix = run(&sshd, &root, &hosts, "one", Mode::Apply, None);
    assert_eq!(fix.total_changes(), 2);
    assert_eq!(
        run(&sshd, &root, &hosts, "one", Mode::Apply, None).total_changes(),
        0
    );
}

#[test]
#[ignore = "end to end: needs root and /usr/sbin/sshd (a private sshd on 127.0.0.1-3); run with PGSTRAP_E2E=1 tests/run.sh"]
fn loopback_unreachable_host_is_reported_and_the_others_go_on() {
    require_e2e();
    let sshd = start_sshd(2233);
    let root = sshd.dir.path().join("managed");
    let report = run(&sshd, &root, &[1, 2, 3], "one", Mode::Apply, Some(3));
    assert_eq!(report.exit_code(), 1);
    let h3 = report.host("h3").unwrap();
    assert_eq!(h3.status, HostStatus::Unreachable);
    let failure = h3.failure.as_ref().unwrap();
    assert_eq!(failure.step, "connect");
    assert!(
        failure.message.contains("Connection refused"),
        "{failure:?}"
    );
    assert!(failure
        .hint
        .as_deref()
        .unwrap()
        .contains("pgstrap lab status"));
    for h in ["h1", "h2"] {
        assert_eq!(report.host(h).unwrap().status, HostStatus::Changed);
    }
    assert!(root.join("h1/conf/app.conf").exists() && !root.join("h3").exists());
}

#[test]
#[ignore = "end to end: needs root and /usr/sbin/sshd (a private sshd on 127.0.0.1-3); run with PGSTRAP_E2E=1 tests/run.sh"]
fn loopback_unknown_host_key_is_refused_with_a_hint() {
    require_e2e();
    let sshd = start_sshd(2235);
    std::fs::write(sshd.dir.path().join("known_hosts"), "").unwrap();
    let root = sshd.dir.path().join("managed");
    let report = run(&sshd, &root, &[1], "one", Mode::Plan, None);
    let failure = report.host("h1").unwrap().failure.clone().unwrap();
    assert!(
        failure.message.contains("Host key verification failed"),
        "{failure:?}"
    );
    assert!(failure.hint.unwrap().contains("no known host key"));
}

// ------------------------------------------------------------------------------------------------
// Lab hosts

/// The lab tests share the lab hosts (one stops n3): one at a time. Each brings up its own.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lab(sets: &[&str], mode: Mode) -> Report {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let project = pgstrap::project::load(Path::new(&inventory()), &sets).unwrap();
    let options = Options {
        hosts: Some(vec!["n1".into(), "n2".into(), "n3".into()]),
        roles: Some(vec!["common".into(), "pgbouncer".into()]),
        ..Options::default()
    };
    runtime()
        .block_on(async {
            match mode {
                Mode::Plan => exec::plan(&project, options).await,
                Mode::Apply => exec::apply(&project, options).await,
            }
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
#[ignore = "end to end: needs root and takes over the lab; run with PGSTRAP_E2E=1 tests/run.sh"]
fn lab_common_and_pgbouncer_converge_idempotently_and_handlers_follow_files() {
    require_e2e();
    let _lab = LAB.lock().unwrap_or_else(|e| e.into_inner());
    // Bare hosts of its own: the engine's first apply installs the packages (its package step
    // and the handlers that follow it are the subject).
    common::fresh_lab(&["--hosts", "3"]);
    let first = lab(&[], Mode::Apply);
    assert_eq!(first.exit_code(), 0, "{first:#?}");

    let second = lab(&[], Mode::Apply);
    assert_eq!(
        second.total_changes(),
        0,
        "second apply must change nothing: {second:#?}"
    );
    assert!(
        second.hosts.iter().all(|h| h.handlers.is_empty()),
        "and restart nothing"
    );

    let session = lab(&["pgbouncer.pool_mode=session"], Mode::Apply);
    for host in &session.hosts {
        let subjects: Vec<&str> = host.changes.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["/etc/pgbouncer/pgbouncer.ini", "reload pgbouncer"],
            "{}",
            host.host
        );
        assert_eq!(host.handlers, ["reload pgbouncer"]);
    }
    let back = lab(&[], Mode::Apply);
    assert!(back.hosts.iter().all(|h| h.changes.len() == 2));

    // A manual edit shows as drift in a plan, which changes nothing.
    let inventory = pgstrap::project::load(Path::new(&inventory()), &[]).unwrap();
    let n2 = inventory.inventory.hosts.get("n2").unwrap();
    let target = pgstrap::exec::target(&inventory.inventory, n2);
    runtime().block_on(async {
        let s = pgstrap::connect::Session::connect(&target, Masker::default())
            .await
            .unwrap();
        s.run(&pgstrap::connect::RemoteCommand::new(&[
            "sh",
            "-c",
            "echo '; hand edit' >> /etc/pgbouncer/pgbouncer.ini",
        ]))
        .await
        .unwrap();
        s.close().await;
    });
    let drift = lab(&[], Mode::Plan);
    let n2_changes: Vec<&str> = drift
        .host("n2")
        .unwrap()
        .changes
        .iter()
        .map(|c| c.subject.as_str())
        .collect();
    assert_eq!(
        n2_changes,
        ["/etc/pgbouncer/pgbouncer.ini", "reload pgbouncer"]
    );
    assert!(drift.host("n2").unwrap().changes[0]
        .diff
        .as_deref()
        .unwrap()
        .contains("-; hand edit"));
    assert_eq!(
        lab(&[], Mode::Plan).host("n2").unwrap().changes.len(),
        2,
        "plan did not fix it"
    );
    assert_eq!(lab(&[], Mode::Apply).host("n2").unwrap().changes.len(), 2);
}

#[test]
#[ignore = "end to end: needs root and takes over the lab; run with PGSTRAP_E2E=1 tests/run.sh"]
fn lab_stopped_host_gives_a_connect_error_and_the_others_stay_consistent() {
    require_e2e();
    let _lab = LAB.lock().unwrap_or_else(|e| e.into_inner());
    // Hosts of its own: a first apply with one host down is the subject.
    common::fresh_lab(&["--hosts", "3"]);
    pgstrap_ok(&["lab", "stop", "n3"]);
    let report = lab(&[], Mode::Apply);
    let start = common::pgstrap(&["lab", "start", "n3"]);
    assert_eq!(report.exit_code(), 1);
    let n3 = report.host("n3").unwrap();
    assert_eq!(n3.status, HostStatus::Unreachable, "{n3:#?}");
    assert!(n3.failure.as_ref().unwrap().hint.is_some());
    for h in ["n1", "n2"] {
        assert_ne!(report.host(h).unwrap().status, HostStatus::Failed);
    }
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
}

// ------------------------------------------------------------------------------------------------
// Benchmark (not a timed test): `scripts/bench-engine.sh` runs it.

#[test]
#[ignore = "benchmark: needs root and /usr/sbin/sshd; run scripts/bench-engine.sh"]
fn bench_engine_figures() {
    let sshd = start_sshd(2237);
    let root = sshd.dir.path().join("managed");
    let rt = runtime();
    // Hosts h1..hN all at 127.0.0.1..3 (one ControlMaster each, like N real hosts).
    let many = |n: u8, mode: Mode, root: &Path| {
        let ids: Vec<u8> = (1..=n).collect();
        let state = desired(root, &ids, "one");
        let targets = ids
            .iter()
            .map(|&i| Target {
                address: format!("127.0.0.{}", (i - 1) % 3 + 1),
                ..target(&sshd, i, sshd.port)
            })
            .collect();
        let started = std::time::Instant::now();
        let report = rt.block_on(exec::run(state, targets, mode, Options::default()));
        assert_eq!(report.exit_code(), 0, "{report:#?}");
        (started.elapsed(), report)
    };
    for n in [3u8, 6] {
        many(n, Mode::Apply, &root);
        let (elapsed, report) = many(n, Mode::Apply, &root);
        assert_eq!(report.total_changes(), 0);
        let connect: u64 = report
            .hosts
            .iter()
            .map(|h| h.timings.connect_ms)
            .max()
            .unwrap_or(0);
        let facts: u64 = report
            .hosts
            .iter()
            .map(|h| h.timings.facts_ms)
            .max()
            .unwrap_or(0);
        println!(
            "no-op apply, {n} hosts: {:.0} ms (slowest connect {connect} ms, slowest facts {facts} ms)",
            elapsed.as_secs_f64() * 1000.0
        );
    }
    let session = rt
        .block_on(pgstrap::connect::Session::connect(
            &target(&sshd, 1, sshd.port),
            Masker::default(),
        ))
        .unwrap();
    let started = std::time::Instant::now();
    rt.block_on(async {
        for _ in 0..200 {
            session
                .run(&pgstrap::connect::RemoteCommand::new(&["true"]))
                .await
                .unwrap();
        }
    });
    let elapsed = started.elapsed();
    println!(
        "200 sequential commands over one connection: {:.0} ms ({:.1} ms each)",
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1000.0 / 200.0
    );
    rt.block_on(session.close());
    let fan_out: u8 = std::env::var("PGSTRAP_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (elapsed, _) = many(fan_out, Mode::Plan, &root);
    println!(
        "plan fan-out to {fan_out} hosts: {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    );
}
