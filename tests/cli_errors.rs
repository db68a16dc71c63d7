//! The CLI's answers to bad inventories: exit code 2, every problem with file:line:column and a
//! hint, nothing else done. One snapshot per file in `inventories/broken/`.

use std::process::Command;

fn pgstrap() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgstrap"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PGSTRAP_TEST_UNSET_PASSWORD")
        .env_remove("PGSTRAP_INVENTORY")
        .env("NO_COLOR", "1");
    command
}

#[test]
fn every_broken_inventory_is_rejected_with_exit_2_and_a_located_error() {
    insta::glob!("../inventories/broken", "*.yaml", |path| {
        let relative = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .expect("fixture inside the repository");
        let output = pgstrap()
            .args(["check", "-i"])
            .arg(relative)
            .output()
            .expect("run pgstrap");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {stderr}",
            relative.display()
        );
        assert!(output.stdout.is_empty(), "nothing on stdout for bad input");
        let name = relative.display().to_string();
        assert!(
            stderr.contains(&format!("--> {name}:")),
            "{name}: the error names file:line:column\n{stderr}"
        );
        assert!(
            stderr.contains("hint: "),
            "{name}: the error gives a hint\n{stderr}"
        );
        insta::assert_snapshot!(stderr);
    });
}

#[test]
fn a_single_etcd_member_is_a_warning_not_an_error() {
    let output = pgstrap()
        .args(["check", "-i", "inventories/warnings/single-etcd.yaml"])
        .output()
        .expect("run pgstrap");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: cluster `main` has a single etcd member"),
        "{stderr}"
    );
}

#[test]
fn a_missing_inventory_is_bad_input() {
    let output = pgstrap()
        .args(["check", "-i", "inventories/does-not-exist.yaml"])
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read inventory"), "{stderr}");
}

#[test]
fn an_unknown_set_key_is_bad_input_with_a_suggestion() {
    let output = pgstrap()
        .args([
            "check",
            "-i",
            "inventories/single-dc.yaml",
            "--set",
            "patroni.tll=20",
        ])
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did you mean `patroni.ttl`"), "{stderr}");
}

#[test]
fn a_set_value_of_the_wrong_type_is_bad_input() {
    // Regression (issue 11): `--set` values were not typed either.
    for (set, expected) in [
        (
            "patroni.ttl=thirty",
            "`patroni.ttl` must be a whole number of at least 1, not \"thirty\"",
        ),
        (
            "keepalived.nopreempt=\"false\"",
            "`keepalived.nopreempt` must be true or false, not \"false\"",
        ),
        (
            "postgresql.port=65536",
            "`postgresql.port` must be a port number from 1 to 65535",
        ),
    ] {
        let output = pgstrap()
            .args(["check", "-i", "inventories/single-dc.yaml", "--set", set])
            .output()
            .expect("run pgstrap");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{set}: {stderr}");
        assert!(stderr.contains(expected), "{set}: {stderr}");
    }
}

#[test]
fn example_inventories_are_valid() {
    for inventory in [
        "inventories/single-dc.yaml",
        "inventories/two-dc.yaml",
        "inventories/dedicated-etcd.yaml",
    ] {
        let output = pgstrap()
            .args(["check", "-i", inventory])
            .output()
            .expect("run pgstrap");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{inventory}: {stderr}");
    }
}
