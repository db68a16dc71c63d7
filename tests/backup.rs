//! End-to-end: backups and point-in-time recovery with pgBackRest, under a client writing through
//! the VIP. A lab of 6 hosts: cluster `main` (n1–n3, balancers n4 n5, the repository on n4) and
//! `scratch` (n6, `restore_of: main`). `apply` creates the stanza and the first full backup;
//! rows are written, the time noted, a table created and one dropped after it; a backup on
//! demand and a switchover happen while the client writes (archiving goes on from the new
//! primary); `pgstrap restore --into scratch --to TIME` brings back every row committed before
//! the time and nothing after it, the dropped table included; refused restores change nothing; a
//! second apply changes nothing. `#[ignore]`d: runs only with `--ignored` and `PGSTRAP_E2E=1`.

mod common;

use std::collections::BTreeSet;

use common::{ip, pgstrap, pgstrap_ok, require_e2e, run_on, vip};

/// The repository's host (n4) and the restore target's (n6).
fn repository() -> String {
    ip("n4")
}

fn scratch() -> String {
    ip("n6")
}

/// SQL as postgres on `address` (its socket), unaligned, tuples only.
fn sql(address: &str, database: &str, query: &str) -> String {
    run_on(
        address,
        &format!(
            "runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1 -d {database} -c {}",
            shell_quote(query)
        ),
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The lab's Debian release for this test: `PGSTRAP_E2E_RELEASE` (13 by default). On 12 the
/// rollout is refused at preflight for now (pgBackRest 2.45 verifies TLS peers by DNS name only):
/// this is how the test is run once that is solved.
fn release() -> String {
    std::env::var("PGSTRAP_E2E_RELEASE").unwrap_or_else(|_| "13".into())
}

/// The PostgreSQL major the lab's hosts run.
fn major(address: &str) -> String {
    run_on(address, "ls /usr/lib/postgresql | sort -n | tail -1")
}

/// A fresh 6-host lab of the test's release: cluster `main` with backups (repository n4) and
/// the restore target `scratch` on n6. Returns the inventory's path.
fn backup_lab() -> String {
    let release = release();
    let inventory = common::fresh_lab(&[
        "--preinstalled",
        "--hosts",
        "6",
        "--backup",
        "--release",
        &release,
    ]);
    let text = std::fs::read_to_string(&inventory).expect("lab inventory");
    std::fs::write(
        &inventory,
        format!(
            "{text}  scratch:\n    datacenter: dc1\n    etcd: [n6]\n    postgres: [n6]\n    restore_of: main\n    networks: [{}]\n",
            common::network()
        ),
    )
    .expect("add the restore target");
    inventory
}

fn ids(address: &str) -> BTreeSet<u64> {
    sql(address, "postgres", "SELECT id FROM pgstrap_drill.writes")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
#[ignore = "e2e: needs real lab hosts (PGSTRAP_E2E=1, tests/run.sh)"]
fn a_restore_to_a_time_brings_back_exactly_what_was_committed_before_it() {
    require_e2e();
    let inventory = backup_lab();
    let output = pgstrap(&["apply", "-i", &inventory]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "rollout with backups failed:\n{log}"
    );
    assert!(
        log.contains("took the first full backup")
            && log.contains("created the pgBackRest stanza main"),
        "apply did not create the stanza and the first backup:\n{log}"
    );
    assert!(log.contains("restore target: not restored yet"), "{log}");
    let (_, primary) = common::leader(&inventory, "main");

    let mut writer = common::Writer::start(&inventory, &vip());
    std::thread::sleep(std::time::Duration::from_secs(1));
    sql(
        &primary,
        "postgres",
        "CREATE TABLE precious (id int PRIMARY KEY, note text); \
         INSERT INTO precious SELECT g, 'row ' || g FROM generate_series(1, 1000) g",
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The moment to restore to, from the server's clock, with the newest write committed then.
    let noted = sql(
        &primary,
        "postgres",
        "SELECT clock_timestamp(), (SELECT max(id) FROM pgstrap_drill.writes)",
    );
    let (at, newest) = noted.split_once('|').expect("time|id");
    let newest: u64 = newest.trim().parse().expect("an id");
    std::thread::sleep(std::time::Duration::from_millis(500));
    sql(
        &primary,
        "postgres",
        "CREATE TABLE late (id int); DROP TABLE precious",
    );
    let taken = writer.step("a differential backup on demand", || {
        pgstrap_ok(&["backup", "-i", &inventory, "--type", "diff"])
    });
    assert!(taken.contains("diff backup"), "{taken}");
    writer.step("a switchover, archiving from the new primary", || {
        pgstrap_ok(&["switchover", "-i", &inventory, "--yes"]);
        // A WAL segment from the new primary through the archive, end to end.
        run_on(
            &repository(),
            "runuser -u postgres -- pgbackrest --stanza=main check",
        );
    });

    // Refused before anything changes: a time in the future, one before the oldest backup,
    // a target cluster that is not a restore target.
    for (to, into) in [
        ("2999-01-01 00:00:00", "scratch"),
        ("2001-01-01 00:00:00", "scratch"),
        ("latest", "main"),
    ] {
        let output = pgstrap(&[
            "restore",
            "-i",
            &inventory,
            "--cluster",
            "main",
            "--into",
            into,
            "--to",
            to,
        ]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "restore --to {to} --into {into} was not refused:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(
        run_on(
            &scratch(),
            &format!(
                "ls -A /var/lib/postgresql/{}/scratch 2>/dev/null | wc -l",
                major(&scratch())
            )
        ) == "0",
        "a refused restore wrote on the target"
    );

    let report = writer.step("the restore into another cluster", || {
        pgstrap_ok(&[
            "restore",
            "-i",
            &inventory,
            "--cluster",
            "main",
            "--into",
            "scratch",
            "--to",
            at.trim(),
            "--json",
        ])
    });
    let report: serde_json::Value = serde_json::from_str(&report).expect("restore --json");
    // The source's writes, read before the client stops (it drops its table then).
    let (_, primary) = common::leader(&inventory, "main");
    let source = ids(&primary);
    writer.finish("backups, a switchover and a restore into another cluster");

    // Exactly what was committed before the time: the dropped table back whole, the later one
    // absent, every write up to the noted one and none the source does not hold.
    assert_eq!(
        sql(&scratch(), "postgres", "SELECT count(*) FROM precious"),
        "1000"
    );
    assert_eq!(
        sql(&scratch(), "postgres", "SELECT to_regclass('late') IS NULL"),
        "t",
        "a table created after the target time was restored"
    );
    let restored = ids(&scratch());
    assert!(
        restored.is_subset(&source),
        "the restore holds writes the source never had"
    );
    let before: BTreeSet<u64> = source.iter().copied().filter(|id| *id <= newest).collect();
    assert!(
        before.is_subset(&restored),
        "writes committed before the target time are missing: {:?}",
        before.difference(&restored).collect::<Vec<_>>()
    );
    let after = restored.iter().filter(|id| **id > newest).count();
    assert!(
        after <= 1,
        "{after} writes from after the target time were restored"
    );
    eprintln!(
        "figure: restore to a time: {} rows of the client restored (of {} in the source), {} bytes in {:.1} s (files {:.1} s, WAL replay {:.1} s)",
        restored.len(),
        source.len(),
        report["bytes"],
        report["total_seconds"].as_f64().unwrap_or(0.0),
        report["restore_seconds"].as_f64().unwrap_or(0.0),
        report["recovery_seconds"].as_f64().unwrap_or(0.0),
    );
    // The restored cluster archives nothing into the source's repository.
    assert_eq!(sql(&scratch(), "postgres", "SHOW archive_mode"), "off");

    let output = pgstrap(&["apply", "-i", &inventory]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && log.contains("done: 0 change(s)"),
        "the second apply changed something:\n{log}"
    );
    let status = common::status(&["-i", &inventory]);
    assert!(
        status.contains("backup"),
        "status shows no backups:\n{status}"
    );

    // In place, to the same time: main gets its dropped table back and loses what came after
    // the time (kept in the moved-aside data directories); it archives and backs up again.
    let report = pgstrap_ok(&[
        "restore",
        "-i",
        &inventory,
        "--cluster",
        "main",
        "--in-place",
        "--to",
        at.trim(),
        "--yes",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).expect("restore --json");
    assert_eq!(
        report["moved_aside"].as_array().map(Vec::len),
        Some(3),
        "every member's data directory kept: {report}"
    );
    let (_, primary) = common::leader(&inventory, "main");
    assert_eq!(
        sql(&primary, "postgres", "SELECT count(*) FROM precious"),
        "1000"
    );
    assert_eq!(
        sql(&primary, "postgres", "SELECT to_regclass('late') IS NULL"),
        "t"
    );
    run_on(
        &repository(),
        "runuser -u postgres -- pgbackrest --stanza=main check",
    );
    eprintln!(
        "figure: restore in place to a time: {:.1} s until every member streams and a full backup is taken",
        seconds(&report, "total_seconds")
    );
    let output = pgstrap(&["apply", "-i", &inventory]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && log.contains("done: 0 change(s)"),
        "apply after the in-place restore changed something or failed:\n{log}"
    );
}

/// Seconds of a `pgstrap … --json` report field.
fn seconds(report: &serde_json::Value, field: &str) -> f64 {
    report[field].as_f64().unwrap_or(f64::NAN)
}

/// Figures for the README (scripts/bench-backup.sh, not a timed test): a full and an incremental
/// backup of a pgbench database of scale 50, the WAL archive's throughput under pgbench, and a
/// restore of it all into another cluster (RTO per GB).
#[test]
#[ignore = "benchmark: scripts/bench-backup.sh"]
fn bench_backup_and_restore() {
    assert_eq!(
        std::env::var("PGSTRAP_BENCH").as_deref(),
        Ok("1"),
        "run scripts/bench-backup.sh"
    );
    let scale: u32 = std::env::var("PGSTRAP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let inventory = backup_lab();
    pgstrap_ok(&["apply", "-i", &inventory]);
    let (_, primary) = common::leader(&inventory, "main");
    let pgbench = format!(
        "runuser -u postgres -- /usr/lib/postgresql/{}/bin/pgbench",
        major(&primary)
    );
    let started = std::time::Instant::now();
    run_on(
        &primary,
        &format!("{pgbench} -q -i -s {scale} postgres 2>&1 | tail -1"),
    );
    let size: f64 = sql(&primary, "postgres", "SELECT pg_database_size('postgres')")
        .parse()
        .unwrap_or(0.0);
    eprintln!(
        "figure: pgbench scale {scale}: {:.0} MB database, loaded in {:.1} s",
        size / 1e6,
        started.elapsed().as_secs_f64()
    );
    let backup = |kind: &str| -> serde_json::Value {
        serde_json::from_str(&pgstrap_ok(&[
            "backup", "-i", &inventory, "--type", kind, "--json",
        ]))
        .expect("backup --json")
    };
    let full = backup("full");
    eprintln!(
        "figure: full backup: {:.1} s, {:.0} MB database, {:.0} MB in the repository (zst, encrypted)",
        seconds(&full, "seconds"),
        full["backup"]["size"].as_f64().unwrap_or(0.0) / 1e6,
        full["backup"]["repo_size"].as_f64().unwrap_or(0.0) / 1e6
    );
    // WAL written by pgbench and archived by the time `pgbackrest check` returns.
    let lsn = |a: &str| sql(a, "postgres", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn");
    let from: f64 = lsn(&primary).parse().unwrap_or(0.0);
    let started = std::time::Instant::now();
    run_on(
        &primary,
        &format!("{pgbench} -n -c 4 -j 2 -T 30 postgres 2>&1 | grep -E '^tps' | head -1"),
    );
    run_on(
        &repository(),
        "runuser -u postgres -- pgbackrest --stanza=main check",
    );
    let to: f64 = lsn(&primary).parse().unwrap_or(0.0);
    eprintln!(
        "figure: WAL archive: {:.0} MB of WAL written by pgbench in 30 s, all archived {:.1} s after the start ({:.1} MB/s)",
        (to - from) / 1e6,
        started.elapsed().as_secs_f64(),
        (to - from) / 1e6 / started.elapsed().as_secs_f64()
    );
    let incr = backup("incr");
    eprintln!(
        "figure: incremental backup after it: {:.1} s, {:.0} MB added to the repository",
        seconds(&incr, "seconds"),
        incr["backup"]["repo_delta"].as_f64().unwrap_or(0.0) / 1e6
    );
    let report: serde_json::Value = serde_json::from_str(&pgstrap_ok(&[
        "restore",
        "-i",
        &inventory,
        "--cluster",
        "main",
        "--into",
        "scratch",
        "--to",
        "latest",
        "--json",
    ]))
    .expect("restore --json");
    let gigabytes = report["bytes"].as_f64().unwrap_or(0.0) / 1e9;
    let total = seconds(&report, "total_seconds");
    eprintln!(
        "figure: restore (latest) into another cluster: {:.2} GB in {total:.1} s (files {:.1} s, WAL replay {:.1} s): RTO {:.0} s per GB",
        gigabytes,
        seconds(&report, "restore_seconds"),
        seconds(&report, "recovery_seconds"),
        total / gigabytes
    );
    let count = |a: &str| {
        sql(
            a,
            "postgres",
            "SELECT count(*), sum(abalance) FROM pgbench_accounts",
        )
    };
    assert_eq!(
        count(&scratch()),
        count(&primary),
        "the restore differs from the source"
    );
    common::lab_down();
}
