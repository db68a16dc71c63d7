//! End-to-end: an operator's mistakes with the inventory never touch a running cluster. On the
//! shared Debian 13 cluster, under a client writing through the VIP, `plan` and `apply` from
//! copies of the inventory that lack its CA directory, or its secrets file, and a membership
//! change from such a copy: each refused with exit 2 before anything changes — nothing made up
//! locally, every managed file's hash and every service's PID unchanged on every host, no write
//! failed. Then the original inventory still applies with 0 changes. `#[ignore]`d: runs only with
//! `--ignored` and `PGSTRAP_E2E=1` (`tests/run.sh`).

mod common;

use std::path::Path;

use common::{dir, ip, pgstrap, require_e2e, run_on, vip};

/// The lab's five hosts' addresses.
fn hosts() -> Vec<String> {
    ["n1", "n2", "n3", "n4", "n5"].map(ip).to_vec()
}

/// What a refused command must leave as it was: per host, the hash of every file under the
/// stack's configuration directories and the main PID of every service of the stack.
fn hosts_state() -> Vec<String> {
    hosts()
        .iter()
        .map(|address| {
            run_on(
                address,
                "find /etc/etcd /etc/patroni /etc/pgbouncer /etc/haproxy /etc/keepalived \
                 /etc/default/etcd -type f -exec sha256sum {} + 2>/dev/null | sort; \
                 for s in etcd patroni pgbouncer haproxy keepalived; do \
                 echo \"$s $(systemctl show -p MainPID --value $s)\"; done",
            )
        })
        .collect()
}

/// A copy of the lab's inventory in `dir`, with its secrets file and CA directory or not, and
/// its text changed by `edit`. Returns the copy's path.
fn copy_inventory(dir: &Path, secrets: bool, ca: bool, edit: impl Fn(String) -> String) -> String {
    let lab_dir = common::dir();
    let lab = Path::new(&lab_dir);
    let text = std::fs::read_to_string(lab.join("inventory.yaml")).expect("lab inventory");
    let copy = dir.join("inventory.yaml");
    std::fs::write(&copy, edit(text)).expect("write the copy");
    let _ = std::fs::remove_file(dir.join("inventory.secrets.yaml"));
    let _ = std::fs::remove_dir_all(dir.join("inventory.tls"));
    if secrets {
        std::fs::copy(
            lab.join("inventory.secrets.yaml"),
            dir.join("inventory.secrets.yaml"),
        )
        .expect("copy the secrets file");
    }
    if ca {
        let status = std::process::Command::new("cp")
            .args([
                "-a",
                &format!("{lab_dir}/inventory.tls"),
                &dir.display().to_string(),
            ])
            .status()
            .expect("cp");
        assert!(status.success(), "copy the CA directory");
    }
    copy.display().to_string()
}

/// Run `command` on the copy and insist it is refused as bad input, naming `names`, with no
/// secret in its output.
fn refused(command: &str, copy: &str, names: &[&str], secret_values: &[String]) {
    let output = pgstrap(&[command, "-i", copy]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{command} not refused:\n{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    for name in names {
        assert!(
            text.contains(name),
            "the refusal does not name {name}:\n{text}"
        );
    }
    for value in secret_values {
        assert!(
            !text.contains(value.as_str()),
            "a secret in the output:\n{text}"
        );
    }
    eprintln!("{command} from {copy}: refused\n{text}");
}

#[test]
#[ignore = "e2e: needs real lab hosts (PGSTRAP_E2E=1, tests/run.sh)"]
fn an_inventory_copy_without_its_ca_or_secrets_is_refused_and_changes_nothing() {
    require_e2e();
    let inventory = common::take(&common::MAIN);
    let secrets: Vec<String> = std::fs::read_to_string(format!("{}/inventory.secrets.yaml", dir()))
        .expect("secrets file")
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(_, v)| v.trim_matches('"').to_owned())
        })
        .filter(|v| v.len() >= 8)
        .collect();
    let before = hosts_state();
    let copies = tempfile::tempdir().expect("a directory for the copies");
    let mut writer = common::Writer::start(&inventory, &vip());
    std::thread::sleep(std::time::Duration::from_secs(1));

    // A copy with the secrets file but without the CA directory: a new CA would be made.
    let copy = copy_inventory(copies.path(), true, false, |t| t);
    writer.step(
        "plan and apply from a copy without the CA (refused)",
        || {
            for command in ["plan", "apply"] {
                refused(
                    command,
                    &copy,
                    &[
                        "inventory.tls` is missing",
                        "/etc/etcd/tls/ca.crt",
                        "\"pgstrap CA inventory\" (sha256 ",
                    ],
                    &secrets,
                );
            }
        },
    );
    assert!(
        !copies.path().join("inventory.tls").exists(),
        "a CA was written"
    );

    // With the CA but without the secrets file: new passwords would be generated.
    let copy = copy_inventory(copies.path(), false, true, |t| t);
    writer.step(
        "apply from a copy without the secrets file (refused)",
        || {
            refused(
                "apply",
                &copy,
                &[
                    "inventory.secrets.yaml` is missing",
                    "`superuser_password`",
                    "/etc/patroni/config.yml",
                    "`keepalived_password`",
                ],
                &secrets,
            );
        },
    );
    assert!(
        !copies.path().join("inventory.secrets.yaml").exists(),
        "a secrets file was written"
    );

    // A membership change (n3 leaves the DB members) from a copy without the CA.
    let copy = copy_inventory(copies.path(), true, false, |t| {
        t.replacen("postgres: [n1, n2, n3]", "postgres: [n1, n2]", 1)
    });
    writer.step(
        "a membership change from a copy without the CA (refused)",
        || {
            refused("apply", &copy, &["inventory.tls` is missing"], &secrets);
        },
    );
    assert!(
        !copies.path().join("inventory.tls").exists(),
        "a CA was written"
    );

    writer.finish_uninterrupted("refused applies from inventory copies");
    assert_eq!(hosts_state(), before, "a refused command changed a host");

    let output = pgstrap(&["apply", "-i", &inventory]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("done: 0 change(s)"),
        "the original inventory does not apply cleanly afterwards:\n{text}"
    );
    common::give_back(&common::MAIN);
}

/// `SHOW name` on each DB host of the lab's cluster (as postgres, over its socket).
fn shown_everywhere(name: &str) -> Vec<String> {
    hosts()[..3]
        .iter()
        .map(|address| {
            run_on(
                address,
                &format!("runuser -u postgres -- psql -XAtc 'SHOW {name}'"),
            )
        })
        .collect()
}

/// `pgstrap plan` (stdout and stderr) must succeed.
fn plan(inventory: &str) -> String {
    let output = pgstrap(&["plan", "-i", inventory]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "plan failed:\n{text}");
    text
}

#[test]
#[ignore = "e2e: needs real lab hosts (PGSTRAP_E2E=1, tests/run.sh)"]
fn a_parameter_removed_from_the_inventory_returns_to_its_default_and_others_are_left() {
    require_e2e();
    let inventory = common::take(&common::MAIN);
    let default = shown_everywhere("work_mem");
    let writer = common::Writer::start(&inventory, &vip());

    // Set by an apply, then gone from the inventory: plan shows the removal, apply makes it.
    common::pgstrap_ok(&[
        "apply",
        "-i",
        &inventory,
        "--set",
        "postgresql.parameters.work_mem=8MB",
    ]);
    assert_eq!(shown_everywhere("work_mem"), vec!["8MB"; 3]);
    let text = plan(&inventory);
    assert!(
        text.contains("postgresql.parameters.work_mem: 8MB → (removed: back to its default)"),
        "plan does not show the removal:\n{text}"
    );
    // For automation: one JSON document carrying the step, and the detailed exit code.
    let output = pgstrap(&["plan", "--json", "-i", &inventory]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan --json");
    assert!(
        json["cluster_steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["change"] == true
                && s["text"].as_str().is_some_and(|t| t.contains("work_mem")))),
        "{json}"
    );
    let output = pgstrap(&["plan", "--detailed-exitcode", "-i", &inventory]);
    assert_eq!(output.status.code(), Some(2), "a pending change is exit 2");
    common::pgstrap_ok(&["apply", "-i", &inventory]);
    assert_eq!(
        shown_everywhere("work_mem"),
        default,
        "work_mem kept its old value"
    );

    // Set by someone else (patronictl): listed by plan, left alone by apply.
    let patronictl = "patronictl -c /etc/patroni/config.yml edit-config --force";
    run_on(
        &hosts()[0],
        &format!("{patronictl} -p track_io_timing=on >/dev/null"),
    );
    let text = plan(&inventory);
    assert!(
        text.contains("parameters set outside the inventory") && text.contains("track_io_timing"),
        "plan does not list the unmanaged parameter:\n{text}"
    );
    common::pgstrap_ok(&["apply", "-i", &inventory]);
    let text = plan(&inventory);
    assert!(
        text.contains("track_io_timing"),
        "apply removed someone else's parameter"
    );
    run_on(
        &hosts()[0],
        &format!("{patronictl} -s postgresql.parameters.track_io_timing=null >/dev/null"),
    );
    writer.finish("a parameter set, removed, and one set outside the inventory");

    let output = pgstrap(&["apply", "-i", &inventory]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("done: 0 change(s)"),
        "a second apply changed something:\n{text}"
    );
    let output = pgstrap(&["plan", "--detailed-exitcode", "-i", &inventory]);
    assert_eq!(output.status.code(), Some(0), "nothing to change is exit 0");
    let output = pgstrap(&["status", "-i", &inventory]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a healthy cluster is exit 0: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    common::give_back(&common::MAIN);
}

/// The secrets file as a map (name → value).
fn stored_secrets() -> std::collections::BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(format!("{}/inventory.secrets.yaml", dir())).expect("secrets");
    serde_saphyr::from_str(&text).expect("secrets file")
}

#[test]
#[ignore = "e2e: needs real lab hosts (PGSTRAP_E2E=1, tests/run.sh)"]
fn every_password_is_rotated_under_load_without_losing_a_write() {
    require_e2e();
    let inventory = common::take(&common::MAIN);
    let before = stored_secrets();
    // A session opened before the rotation (an application's pool): it must never be cut.
    let mut writer = common::Writer::start_with(
        &inventory,
        &vip(),
        pgstrap::stack::drill::client::Style::LongLived,
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let report = writer.step("rotate every password", || {
        common::pgstrap_ok(&["rotate", "passwords", "--json", "-i", &inventory])
    });
    let report: serde_json::Value = serde_json::from_str(&report).expect("report JSON");
    let after = stored_secrets();
    for (name, old) in &before {
        if pgstrap::inventory::secrets::NOT_ROTATED.contains(&name.as_str()) {
            // The backup repository's passphrase: never rotated (the repository's encryption).
            assert_eq!(after.get(name), Some(old), "{name} was rotated");
            continue;
        }
        assert_ne!(after.get(name), Some(old), "{name} was not rotated");
    }
    assert_eq!(
        report["roles"].as_array().map(Vec::len),
        Some(4),
        "the four database roles: {report}"
    );
    assert!(
        report["rollout"]["verify"]["checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "verified with the new passwords: {report}"
    );
    // The old superuser password no longer opens a session; the new one does.
    let runtime = common::cli::runtime();
    let secrets = |value: &str| pgstrap::inventory::secrets::Secrets {
        values: [(
            "superuser_password".to_owned(),
            pgstrap::inventory::secrets::Secret::new(value.to_owned()),
        )]
        .into(),
        ..Default::default()
    };
    let old = runtime.block_on(pgstrap::stack::verify::connect(
        &vip(),
        5000,
        &secrets(&before["superuser_password"]),
    ));
    assert!(old.is_err(), "the old superuser password still works");
    let new = runtime.block_on(pgstrap::stack::verify::connect(
        &vip(),
        5000,
        &secrets(&after["superuser_password"]),
    ));
    assert!(new.is_ok(), "the new superuser password does not work");
    writer.finish_uninterrupted("rotating every password under a session opened before");

    let output = pgstrap(&["apply", "-i", &inventory]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("done: 0 change(s)"),
        "an apply after the rotation changed something:\n{text}"
    );
    common::give_back(&common::MAIN);
}
