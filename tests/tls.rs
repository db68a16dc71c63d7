//! End-to-end: TLS on every channel of a lab rollout, seen from a machine that is not part of
//! the cluster (this one, with curl, openssl and psql): etcd refuses plain HTTP, TLS without a
//! client certificate and a certificate from another CA; Patroni's REST API answers HTTPS only;
//! psql through the VIP is refused without TLS and works with `sslmode=verify-full` and the
//! inventory's CA; replication runs over TLS. Then every certificate is renewed by `apply` under a
//! client writing through the VIP: the services serve the new certificates without a restart,
//! no acknowledged write is lost, and a second apply changes nothing. `#[ignore]`d: runs only
//! with `--ignored` and `PGSTRAP_E2E=1` (`tests/run.sh`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{dir, fresh_lab, ip, pgstrap_ok, require_e2e, run_on, vip};

fn tls_dir() -> String {
    format!("{}/inventory.tls", dir())
}

/// Run a local command; (succeeded, stdout + stderr).
fn local(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn curl(url: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "-sS",
        "-m",
        "5",
        "-X",
        "POST",
        url,
        "-d",
        r#"{"key":"Lw==","range_end":"MA=="}"#,
    ];
    args.extend_from_slice(extra);
    local("curl", &args)
}

/// Wait (polling, up to 30 s) until the server at `address` presents the certificate with
/// `serial`. Patroni applies a reload (its own certificate, and PostgreSQL's through `pg_ctl
/// reload`) at the start of its next HA loop, up to `loop_wait` (10 s) after the SIGHUP.
fn served_soon(address: &str, starttls: Option<&str>, serial: &str, who: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let served = served_serial(address, starttls);
        if served == serial {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who} still serves the old certificate ({served}, renewed: {serial})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The serial of the certificate a server presents (`starttls`: `postgres` for PostgreSQL's
/// protocol, through the VIP and PgBouncer).
fn served_serial(address: &str, starttls: Option<&str>) -> String {
    let tls = tls_dir();
    let mut command = format!(
        "openssl s_client -connect {address} -CAfile {tls}/ca.crt -cert {tls}/pgstrap-client.crt -key {tls}/pgstrap-client.key"
    );
    if let Some(protocol) = starttls {
        command.push_str(&format!(" -starttls {protocol}"));
    }
    let (_, text) = local(
        "sh",
        &[
            "-c",
            &format!("{command} </dev/null 2>/dev/null | openssl x509 -noout -serial"),
        ],
    );
    text.trim().to_owned()
}

fn stored_serial(host: &str) -> String {
    let (ok, text) = local(
        "openssl",
        &[
            "x509",
            "-noout",
            "-serial",
            "-in",
            &format!("{}/hosts/{host}.crt", tls_dir()),
        ],
    );
    assert!(ok, "{text}");
    text.trim().to_owned()
}

fn superuser_password() -> String {
    let secrets =
        std::fs::read_to_string(format!("{}/inventory.secrets.yaml", dir())).expect("secrets");
    secrets
        .lines()
        .find_map(|l| l.strip_prefix("superuser_password: "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("superuser_password")
}

fn psql(conninfo: &str) -> (bool, String) {
    let output = Command::new("psql")
        .arg(conninfo)
        .args([
            "-Atc",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .env("PGPASSWORD", superuser_password())
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("run psql");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A cluster rolled out without TLS (as before pgstrap turned it on) is kept without it by a
/// later apply, with a warning; its status and verification still work; asking for TLS on it
/// explicitly is refused (switching a running etcd's peer URLs is not automated). First in this
/// file: it needs a lab of its own, and the shared cluster is taken after it.
#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn a_cluster_rolled_out_without_tls_is_kept_without_it() {
    require_e2e();
    // A lab of its own: the subject is a cluster rolled out without TLS from its first apply.
    let inventory = fresh_lab(&["--preinstalled", "--hosts", "5"]);
    pgstrap_ok(&["apply", "-i", &inventory, "--set", "tls.enabled=false"]);
    let (ok, text) = curl(&format!("http://{}:2379/v3/kv/range", ip("n1")), &[]);
    assert!(ok && text.contains("\"header\""), "plain etcd: {text}");

    let output = common::pgstrap(&["apply", "-i", &inventory]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success()
            && text.contains("runs without TLS")
            && text.contains("done: 0 change(s)"),
        "an apply of the plain cluster changed it or did not say why not:\n{text}"
    );
    pgstrap_ok(&["verify", "-i", &inventory]);
    let status = common::status(&["--json", "-i", &inventory]);
    assert!(status.contains("\"leader\""), "{status}");

    let output = common::pgstrap(&["apply", "-i", &inventory, "--set", "tls.enabled=true"]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && text.contains("speaks plain HTTP"),
        "TLS asked for on a running plain cluster was not refused:\n{text}"
    );
    common::lab_down();
}

#[test]
#[ignore = "end to end: needs root and the lab; run by tests/run.sh (PGSTRAP_E2E=1 … -- --ignored)"]
fn every_channel_speaks_tls_and_certificates_are_renewed_under_load() {
    require_e2e();
    // The shared cluster: this test leaves it as it found it (renewed certificates, a second
    // apply changing nothing).
    let inventory = common::take(&common::MAIN);
    let tls = tls_dir();
    let ca = format!("{tls}/ca.crt");

    // etcd: no plain HTTP, no TLS client without a certificate, none from another CA.
    let (ok, text) = curl(&format!("http://{}:2379/v3/kv/range", ip("n1")), &[]);
    assert!(!ok, "etcd answered plain HTTP: {text}");
    let (ok, text) = curl(
        &format!("https://{}:2379/v3/kv/range", ip("n1")),
        &["--cacert", &ca],
    );
    assert!(!ok, "etcd answered a client without a certificate: {text}");
    let other = tempfile::tempdir().expect("temporary directory");
    let (other_key, other_cert) = (
        other.path().join("other.key").display().to_string(),
        other.path().join("other.crt").display().to_string(),
    );
    let (ok, text) = local(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &other_key,
            "-out",
            &other_cert,
            "-subj",
            "/CN=intruder",
            "-days",
            "1",
        ],
    );
    assert!(ok, "openssl req: {text}");
    let (ok, text) = curl(
        &format!("https://{}:2379/v3/kv/range", ip("n1")),
        &["--cacert", &ca, "--cert", &other_cert, "--key", &other_key],
    );
    assert!(!ok, "etcd answered a certificate from another CA: {text}");
    let (ok, text) = curl(
        &format!("https://{}:2379/v3/kv/range", ip("n1")),
        &[
            "--cacert",
            &ca,
            "--cert",
            &format!("{tls}/pgstrap-client.crt"),
            "--key",
            &format!("{tls}/pgstrap-client.key"),
        ],
    );
    assert!(
        ok && text.contains("\"header\""),
        "etcd refused pgstrap's certificate: {text}"
    );

    // Patroni's REST API: HTTPS only, its certificate valid for the host's address.
    let (ok, _) = local(
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            &format!("http://{}:8008/health", ip("n1")),
        ],
    );
    assert!(!ok, "Patroni answered plain HTTP");
    let (ok, text) = local(
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "--cacert",
            &ca,
            &format!("https://{}:8008/health", ip("n1")),
        ],
    );
    assert!(ok && text.contains("running"), "Patroni over HTTPS: {text}");

    // PostgreSQL through the VIP (HAProxy → PgBouncer): TLS required, verify-full works.
    let base = format!("host={} port=5000 user=postgres dbname=postgres", vip());
    let (ok, text) = psql(&format!("{base} sslmode=disable"));
    assert!(!ok, "a connection without TLS was accepted: {text}");
    let (ok, text) = psql(&format!("{base} sslmode=verify-full sslrootcert={ca}"));
    assert!(ok, "sslmode=verify-full through the &vip(): {text}");
    // Directly to PostgreSQL: remote access is hostssl only.
    let (ok, text) = psql(&format!(
        "host={} port=5432 user=postgres dbname=postgres sslmode=disable",
        ip("n1")
    ));
    assert!(
        !ok,
        "PostgreSQL accepted a remote connection without TLS: {text}"
    );
    let (ok, text) = psql(&format!(
        "host={} port=5432 user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}",
        ip("n1")
    ));
    assert!(ok && text.trim() == "t", "PostgreSQL over TLS: {text}");

    // Replication over TLS: every replica's walsender connection.
    let (leader, leader_address) = common::leader(&inventory, "main");
    let replication = run_on(
        &leader_address,
        "sudo -u postgres psql -Atc \"SELECT r.application_name || '=' || s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1\"",
    );
    let replicas: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| **n != leader)
        .map(|n| format!("{n}=true"))
        .collect();
    assert_eq!(
        replication,
        replicas.join("\n"),
        "replication connections: {replication}"
    );

    // Renewal under load: every certificate reissued by apply, served without a restart.
    let before: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|h| stored_serial(h))
        .collect();
    let postmaster = run_on(&ip("n1"), "systemctl show -p ExecMainPID --value patroni");
    let writer = common::Writer::start(&inventory, &vip());
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    // A renewal window longer than a certificate's life: every certificate is due.
    pgstrap_ok(&[
        "apply",
        "-i",
        &inventory,
        "--set",
        "tls.renew_before_days=400",
    ]);
    eprintln!(
        "figure: renewing every certificate under load: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let after: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|h| stored_serial(h))
        .collect();
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new, "a certificate was not renewed");
    }
    served_soon(&format!("{}:8008", ip("n1")), None, &after[0], "Patroni");
    served_soon(&format!("{}:2379", ip("n1")), None, &after[0], "etcd");
    served_soon(
        &format!("{}:5432", ip("n1")),
        Some("postgres"),
        &after[0],
        "PostgreSQL",
    );
    served_soon(
        &format!("{}:6432", ip("n1")),
        Some("postgres"),
        &after[0],
        "PgBouncer",
    );
    assert_eq!(
        run_on(&ip("n1"), "systemctl show -p ExecMainPID --value patroni"),
        postmaster,
        "Patroni was restarted for a certificate"
    );

    writer.finish("certificate renewal under load");

    let output = common::pgstrap(&["apply", "-i", &inventory]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("done: 0 change(s)"),
        "a second apply changed something:\n{text}"
    );
    common::give_back(&common::MAIN);
}
