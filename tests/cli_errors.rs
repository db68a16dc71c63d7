//! The CLI's answers to bad inventories: exit code 2, every problem with file:line:column and a
//! hint, nothing else done. One snapshot per file in `inventories/broken/`.

use std::process::Command;

mod common;

fn pgstrap() -> Command {
    let mut command = common::cli::command();
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
            "`patroni.ttl` must be a whole number from 20 to 3600, not \"thirty\"",
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

/// A copy of an example inventory in a temporary directory, with `secrets` as its secrets file
/// (`inventory.secrets.yaml`); commands run there, so messages name `inventory.yaml`.
fn staged(example: &str, secrets: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(example);
    std::fs::copy(source, dir.path().join("inventory.yaml")).expect("copy inventory");
    common::cli::write_secrets(dir.path().join("inventory.secrets.yaml"), secrets);
    dir
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = pgstrap()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run pgstrap");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_broken_secrets_file_is_reported_by_line_and_name_never_by_content() {
    // Regression (issue 11): a parse error printed the neighbouring secrets in clear, on `check`
    // too.
    let dir = staged(
        "inventories/single-dc.yaml",
        "superuser_password: \"P0ison-one\"\nreplication_password: \"P0ison-two\n  rewind_password: [P0ison-three\nkeepalived_password: \"P0ison4\"\n",
    );
    let mut first = None;
    for args in [
        &["check", "-i", "inventory.yaml"][..],
        &["render", "-i", "inventory.yaml", "--out", "out"],
    ] {
        let (code, stderr) = run_in(dir.path(), args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("P0ison"),
            "{args:?} printed a secret:\n{stderr}"
        );
        first.get_or_insert(stderr);
    }
    insta::assert_snapshot!(first.unwrap_or_default());
}

#[test]
fn a_template_error_never_shows_a_secret() {
    // Regression (issue 11): a template naming a secret showed it in the error.
    let dir = staged(
        "inventories/single-dc.yaml",
        "pgbouncer_auth_password: \"P0ison-auth\"\n",
    );
    let templates = dir.path().join("templates/pgbouncer");
    std::fs::create_dir_all(&templates).expect("templates dir");
    std::fs::write(
        templates.join("userlist.txt.j2"),
        "{% include secrets.pgbouncer_auth_password %}\n",
    )
    .expect("override");
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("P0ison"), "{stderr}");
    assert!(stderr.contains("'***'"), "{stderr}");
}

#[test]
fn render_refuses_a_symlink_planted_in_the_output_directory() {
    // Regression (issue 11): `render --out` followed a link planted in the output directory and
    // wrote the Patroni configuration with its passwords to the link's target.
    let dir = staged(
        "inventories/single-dc.yaml",
        "superuser_password: \"P0ison-super\"\n",
    );
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("target");
    std::fs::create_dir_all(dir.path().join("out/pg1/etc")).expect("out");
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("out/pg1/etc/patroni")).expect("link");
    let (code, stderr) = run_in(
        dir.path(),
        &["render", "-i", "inventory.yaml", "--out", "out"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write out/pg1/etc/patroni: it is a symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).expect("read").count(), 0);
    // All or nothing (issue 20): no other host's files, no CA, the secrets file as it was.
    assert_eq!(
        std::fs::read_dir(dir.path().join("out"))
            .expect("out")
            .count(),
        1,
        "files written before the refusal"
    );
    assert!(!dir.path().join("inventory.tls").exists(), "a CA was made");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("inventory.secrets.yaml")).expect("secrets"),
        "superuser_password: \"P0ison-super\"\n"
    );

    // Without the link, every file has its mode; sensitive ones are not readable by others.
    std::fs::remove_file(dir.path().join("out/pg1/etc/patroni")).expect("unlink");
    let (code, stderr) = run_in(
        dir.path(),
        &["render", "-i", "inventory.yaml", "--out", "out"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &str| {
        std::fs::metadata(dir.path().join(path))
            .expect("rendered")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("out/pg1/etc/patroni/config.yml"), 0o600);
    assert_eq!(mode("out/lb1/etc/keepalived/keepalived.conf"), 0o600);
    assert_eq!(mode("out/pg1/etc/pgbouncer/userlist.txt"), 0o640);
}

#[test]
fn render_refused_by_a_later_check_leaves_the_directory_untouched() {
    // Issue 20: `render` (documented to touch nothing) made a secrets file, a CA and host keys,
    // then exited 2 on a port clash.
    let dir = tempfile::tempdir().expect("temp dir");
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/broken/port-clash.yaml");
    std::fs::copy(source, dir.path().join("inventory.yaml")).expect("copy inventory");
    let (code, stderr) = run_in(
        dir.path(),
        &["render", "-i", "inventory.yaml", "--out", "out"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["inventory.yaml".to_owned()],
        "render wrote {left:?}"
    );
}

#[test]
fn a_closed_pipe_or_a_full_disk_ends_a_command_cleanly_never_with_a_panic() {
    // Issue 22: `pgstrap vars … | head -1` panicked (exit 101).
    let inventory =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/single-dc.yaml");
    let inventory = inventory.to_str().expect("path");
    let mut child = pgstrap()
        .args(["vars", "pg1", "-i", inventory])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pgstrap");
    // The reader goes away before the first line is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = pgstrap()
        .args(["vars", "pg1", "-i", inventory])
        .stdout(full)
        .output()
        .expect("run pgstrap");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
}

#[test]
fn completions_and_the_man_page_are_written_from_the_commands_themselves() {
    for shell in ["bash", "zsh", "fish"] {
        let output = pgstrap()
            .args(["completions", shell])
            .output()
            .expect("run");
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("switchover") && script.contains("psql"),
            "{shell}: {script}"
        );
    }
    let output = pgstrap().args(["man"]).output().expect("run");
    assert_eq!(output.status.code(), Some(0));
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(page.contains(".TH pgstrap 1"), "{page}");
    let output = pgstrap()
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unknown shell is bad input"
    );
}

#[test]
fn ssh_and_psql_refuse_what_the_inventory_does_not_have_before_connecting() {
    let output = pgstrap()
        .args(["ssh", "-i", "inventories/single-dc.yaml", "nosuchhost"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no host `nosuchhost`"), "{stderr}");
    assert!(stderr.contains("pg1"), "the hint lists the hosts: {stderr}");
    let output = pgstrap()
        .args([
            "psql",
            "-i",
            "inventories/two-dc.yaml",
            "--cluster",
            "nosuchcluster",
        ])
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An inventory with `text` in a temporary directory (messages name `inventory.yaml`).
fn inventory_of(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("inventory.yaml"), text).expect("write inventory");
    dir
}

#[test]
fn names_and_lines_from_the_inventory_never_reach_the_terminal_raw() {
    // A host name with an escape sequence and one with a newline (issue 22, item 10): escaped in
    // the message, no forged line.
    let dir = inventory_of(
        "hosts:\n  \"pg\\e[31m1\": {address: 10.10.0.11}\n  \"pg2\\nerror: forged\": {address: 10.10.0.12}\nclusters: {}\n",
    );
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "a raw escape: {stderr:?}");
    assert!(stderr.contains("pg\\u{1b}[31m1"), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("error: forged")),
        "a forged line: {stderr}"
    );
    // A raw ESC byte in a comment (a YAML error of its own): replaced in the line shown, which
    // is the right one.
    let dir = inventory_of("hosts:\n  pg1: {address: 10.10.0.11} # \u{1b}[2J\nclusters: {}\n");
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "a raw escape: {stderr:?}");
    assert!(stderr.contains("inventory.yaml:2:"), "{stderr}");
}

#[test]
fn a_secret_written_inline_is_never_echoed() {
    for secrets in [
        "secrets:\n  superuser_password: \"Inline-Secret-1\"\n",
        "secrets:\n  superuser_password: {value: \"Inline-Secret-1\"}\n",
        "secrets: {superuser_password: \"Inline-Secret-1\"}\n",
    ] {
        let dir = inventory_of(&format!(
            "hosts:\n  pg1: {{address: 10.10.0.11}}\nclusters: {{}}\n{secrets}"
        ));
        let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(!stderr.contains("Inline-Secret"), "{stderr}");
        assert!(stderr.contains("inventory.yaml:"), "where, still: {stderr}");
    }
}

#[test]
fn thousands_of_problems_are_capped_and_counted() {
    let hosts: Vec<String> = (0..3000).map(|i| format!("x{i}")).collect();
    let dir = inventory_of(&format!(
        "hosts:\n  h: {{address: 10.0.0.1}}\nclusters:\n  main:\n    etcd: [{}]\n    postgres: [h]\n",
        hosts.join(", ")
    ));
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2));
    assert!(stderr.len() < 2_000_000, "{} bytes of errors", stderr.len());
    assert!(
        stderr.contains("more problem(s) not shown"),
        "{}",
        &stderr[stderr.len().saturating_sub(300)..]
    );
    assert!(stderr.contains("3001 problems found"), "the count is whole");
}

#[test]
fn a_template_name_is_never_a_path_outside_the_templates() {
    let output = pgstrap()
        .args(["templates", "show", "/etc/hostname"])
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    // An override that includes an absolute path renders nothing of it.
    let dir = tempfile::tempdir().expect("temp dir");
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/single-dc.yaml");
    let text = std::fs::read_to_string(source).expect("example");
    std::fs::write(
        dir.path().join("inventory.yaml"),
        text.replacen("\nhosts:", "\ntemplates_dir: overrides\nhosts:", 1),
    )
    .expect("write inventory");
    std::fs::create_dir_all(dir.path().join("overrides/common")).expect("mkdir");
    std::fs::write(
        dir.path().join("overrides/common/createcluster.conf.j2"),
        "{% include '/etc/hostname' %}\n",
    )
    .expect("write override");
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/etc/hostname"), "{stderr}");
}

#[test]
fn a_fifo_where_a_file_is_expected_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("inventory.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let started = std::time::Instant::now();
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    // Not a timed assertion of speed: a FIFO read would block for ever.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn check_and_lab_status_speak_json_when_asked() {
    let output = pgstrap()
        .args([
            "check",
            "--json",
            "-i",
            "inventories/broken/apt-values.yaml",
        ])
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"][0]["line"], 5);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("secret@"));
    let output = pgstrap()
        .args(["check", "--json", "-i", "inventories/single-dc.yaml"])
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        (json["ok"].clone(), json["hosts"].clone()),
        (true.into(), 5.into())
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let output = pgstrap()
        .args(["lab", "status", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run pgstrap");
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["hosts"], serde_json::json!([]));
}

#[test]
fn a_cluster_past_the_member_bound_is_refused_and_default_networks_stay_per_cluster() {
    // Issue 22 item 11: one cluster of N DB hosts was quadratic in `check` (every member lists
    // every other): bounded, and said why.
    let hosts: Vec<String> = (0..101)
        .map(|i| format!("  db{i}: {{address: 10.1.{}.{}}}", i / 200, 10 + i % 200))
        .collect();
    let names: Vec<String> = (0..101).map(|i| format!("db{i}")).collect();
    let dir = inventory_of(&format!(
        "hosts:\n{}\nclusters:\n  big:\n    etcd: [db0, db1, db2]\n    postgres: [{}]\n    networks: [10.0.0.0/8]\n",
        hosts.join("\n"),
        names.join(", ")
    ));
    let (code, stderr) = run_in(dir.path(), &["check", "-i", "inventory.yaml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("has 101 PostgreSQL members"), "{stderr}");
    assert!(stderr.contains("inventory.yaml:"), "{stderr}");
    // Without `networks:`, a cluster's pg_hba lets in its own hosts and hosts in no cluster,
    // not every host of the inventory (869 MB of pg_hba at 3000 hosts).
    let dir = inventory_of(
        "hosts:\n  a1: {address: 10.1.0.11}\n  a2: {address: 10.1.0.12}\n  a3: {address: 10.1.0.13}\n  b1: {address: 10.2.0.11}\n  b2: {address: 10.2.0.12}\n  b3: {address: 10.2.0.13}\n  app: {address: 10.9.0.5}\nclusters:\n  a:\n    etcd: [a1, a2, a3]\n    postgres: [a1, a2, a3]\n  b:\n    etcd: [b1, b2, b3]\n    postgres: [b1, b2, b3]\n",
    );
    let (code, stderr) = run_in(
        dir.path(),
        &["render", "-i", "inventory.yaml", "--out", "out"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let config = std::fs::read_to_string(dir.path().join("out/a1/etc/patroni/config.yml"))
        .expect("a1's Patroni configuration");
    let all_lines: Vec<&str> = config
        .lines()
        .filter(|l| l.contains(" all           all "))
        .collect();
    let allowed = all_lines.join("\n");
    assert!(allowed.contains("10.1.0.12/32"), "{allowed}");
    assert!(
        allowed.contains("10.9.0.5/32"),
        "a host in no cluster: {allowed}"
    );
    assert!(
        !allowed.contains("10.2.0."),
        "another cluster's hosts: {allowed}"
    );
}
