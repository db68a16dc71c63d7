//! The rendered configuration passes the real programs' own checks: `pgstrap render` is run on
//! the example inventories and its output is fed to `haproxy -c`, `keepalived -t`,
//! `patroni --validate-config`, a PgBouncer start-up, `etcd --help` (every `ETCD_*` variable is a
//! flag etcd knows), `pgbackrest info`, `pg_conftool` and `apt-config`.
//!
//! The configuration is rendered for this machine's Debian release (`--release`), so the programs
//! here check the files meant for their own versions; the lab's end-to-end tests check the files
//! of the other release with that release's programs, on its hosts.
//!
//! The programs come from the machine's Debian packages (the versions pgstrap deploys), e.g. on 12:
//!   apt-get install --no-install-recommends haproxy keepalived psmisc patroni python3-etcd \
//!       pgbouncer etcd-server postgresql-15 postgresql-common apt
//! (install postgresql-15 with `create_main_cluster = false` in
//! /etc/postgresql-common/createcluster.d/ and a policy-rc.d that exits 101, so nothing starts).
//! A check whose program is missing FAILS under CI (`CI` set) or with `PGSTRAP_REQUIRE_ALL=1`
//! (`tests/run.sh` sets it after installing the programs). Elsewhere it is SKIPPED with a loud
//! message written straight to stderr, so `cargo test` shows it even for a test that passes.
//!
//! Where a check would touch the machine running the test (bind the hosts' addresses, connect to
//! etcd, write /run), only those values are rewritten in a copy, each rewrite named where it is done.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod common;

/// The example inventories every check runs on.
const INVENTORIES: &[&str] = &["single-dc", "two-dc"];

/// `pgstrap render` output of one inventory, in a temporary directory (with the copied inventory
/// and the secrets file render generates, so nothing is written into the repository).
struct Rendered {
    inventory: String,
    _dir: TempDir,
    out: PathBuf,
}

impl Rendered {
    /// Every host's copy of `path` (absolute path on the host), as (host, file in the output).
    fn files(&self, path: &str) -> Vec<(String, PathBuf)> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.out).expect("render output is a directory") {
            let entry = entry.expect("readable render output");
            let file = entry.path().join(path.trim_start_matches('/'));
            if file.is_file() {
                found.push((entry.file_name().to_string_lossy().into_owned(), file));
            }
        }
        found.sort();
        found
    }

    /// Like [`Rendered::files`], but at least one host must have the file.
    fn expect_files(&self, path: &str) -> Vec<(String, PathBuf)> {
        let found = self.files(path);
        assert!(!found.is_empty(), "{}: no host got {path}", self.inventory);
        found
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Render `inventories/<name>.yaml` (plus `extra` YAML appended to the copy).
fn render(name: &str, extra: &str) -> Rendered {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = repo().join("inventories").join(format!("{name}.yaml"));
    let mut text =
        fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    text.push_str(extra);
    let inventory = dir.path().join(format!("{name}.yaml"));
    fs::write(&inventory, text).expect("copy the inventory");
    let out = dir.path().join("out");
    let output = common::cli::command()
        .arg("render")
        .arg("-i")
        .arg(&inventory)
        .arg("--release")
        .arg(machine_release())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run pgstrap render");
    assert!(
        output.status.success(),
        "pgstrap render -i {name}.yaml failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Rendered {
        inventory: name.to_owned(),
        _dir: dir,
        out,
    }
}

/// This machine's Debian release (`VERSION_ID`), which the programs checked here belong to.
fn machine_release() -> String {
    let text = fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("VERSION_ID in /etc/os-release")
}

fn render_all() -> Vec<Rendered> {
    INVENTORIES.iter().map(|name| render(name, "")).collect()
}

/// The path of `program` when it is installed (PATH, then the sbin directories a non-root PATH
/// may lack), else [`skipped`] (a failure when every check must run) and `None`.
fn program(name: &str, package: &str, check: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        skipped(
            check,
            &format!("`{name}` is not installed (apt-get install {package})"),
        );
    }
    found
}

/// Every check must run: under CI (`CI` set to anything but `false`/`0`) or with
/// `PGSTRAP_REQUIRE_ALL=1` (`tests/run.sh` exports it).
fn every_check_must_run() -> bool {
    let set = |name: &str, off: &[&str]| {
        std::env::var(name).is_ok_and(|v| !v.is_empty() && !off.contains(&v.as_str()))
    };
    set("CI", &["false", "0"]) || std::env::var("PGSTRAP_REQUIRE_ALL").as_deref() == Ok("1")
}

/// A check that cannot run: a failure when every check must run, else a skip nobody can miss.
fn skipped(check: &str, why: &str) {
    assert!(
        !every_check_must_run(),
        "{check} cannot run: {why}; under CI or PGSTRAP_REQUIRE_ALL=1 every check must run"
    );
    // Straight to the process's stderr: the test harness captures `eprintln!` of a test that
    // passes, and this skip must be seen in a plain `cargo test`.
    let banner = "!".repeat(84);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\n!!! SKIPPED {check}: {why}\n\
         !!! This check did NOT run; the configuration it covers is unverified.\n{banner}\n"
    );
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A TCP port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn is_root() -> bool {
    // The test has no libc dependency; `id -u` says who we are.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// pgBackRest reads every rendered /etc/pgbackrest.conf without a warning (an unknown or
/// misplaced option is one) and runs `info` with it. Rewritten in the copy: the repository path
/// (a temporary directory) and, on a DB host, the repository host (`repo1-host*`: `info` would
/// connect to it), so that it reads a local empty repository.
#[test]
fn pgbackrest_reads_the_rendered_configuration() {
    let Some(pgbackrest) = program("pgbackrest", "pgbackrest", "pgbackrest info") else {
        return;
    };
    let mut checked = 0;
    for rendered in render_all() {
        for (host, file) in rendered.files("/etc/pgbackrest.conf") {
            let text = fs::read_to_string(&file).expect("read pgbackrest.conf");
            let repository = tempfile::tempdir().expect("a repository directory");
            let mut copy: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with("repo1-host") && !l.starts_with("repo1-path="))
                .map(str::to_owned)
                .collect();
            let global = copy.iter().position(|l| l == "[global]").expect("[global]");
            copy.insert(
                global + 1,
                format!("repo1-path={}", repository.path().display()),
            );
            let local = file.with_extension("conf.local");
            fs::write(&local, copy.join("\n") + "\n").expect("write the copy");
            let stanza = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
                .expect("a stanza section");
            let output = run(Command::new(&pgbackrest)
                .arg(format!("--config={}", local.display()))
                .arg(format!("--stanza={stanza}"))
                .args(["--log-level-file=off", "--log-level-console=warn"])
                .arg(format!("--lock-path={}", repository.path().display()))
                .args(["--output=json", "info"]));
            assert!(
                output.status.success() && output.stderr.is_empty(),
                "{}/{host}: pgbackrest does not read pgbackrest.conf cleanly: {}",
                rendered.inventory,
                describe(&output)
            );
            let info: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("info as JSON");
            assert_eq!(info[0]["name"], stanza, "{}/{host}", rendered.inventory);
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} pgbackrest.conf checked");
}

#[test]
fn haproxy_accepts_the_rendered_configuration() {
    let Some(haproxy) = program("haproxy", "haproxy", "haproxy -c") else {
        return;
    };
    for rendered in render_all() {
        for (host, file) in rendered.expect_files("/etc/haproxy/haproxy.cfg") {
            // The CA the health checks verify Patroni's certificates with: the rendered one
            // (haproxy -c loads it), at its place in the render output.
            let text = fs::read_to_string(&file).expect("read haproxy.cfg");
            let ca = file.with_file_name("pgstrap-ca.crt");
            let checked = if text.contains("ca-file /etc/haproxy/pgstrap-ca.crt") {
                assert!(
                    ca.is_file(),
                    "{}/{host}: haproxy.cfg names a CA that was not rendered",
                    rendered.inventory
                );
                let copy = file.with_extension("cfg.local");
                fs::write(
                    &copy,
                    text.replace("/etc/haproxy/pgstrap-ca.crt", &ca.display().to_string()),
                )
                .expect("write haproxy.cfg copy");
                copy
            } else {
                file.clone()
            };
            let output = run(Command::new(&haproxy).arg("-c").arg("-f").arg(&checked));
            assert!(
                output.status.success(),
                "{}/{host}: haproxy -c rejects haproxy.cfg: {}",
                rendered.inventory,
                describe(&output)
            );
        }
    }
}

#[test]
fn keepalived_accepts_the_rendered_configuration() {
    let Some(keepalived) = program("keepalived", "keepalived", "keepalived -t") else {
        return;
    };
    if !Path::new("/usr/bin/killall").exists() {
        skipped(
            "keepalived -t",
            "/usr/bin/killall (psmisc) is missing: the HAProxy check script would be dropped",
        );
        return;
    }
    // keepalived -t fails when the VRRP interface does not exist on the machine running it. When
    // the rendered one (keepalived.interface, default eth0) is absent here, the copy uses an
    // interface that exists; nothing else is changed.
    let local_interfaces: BTreeSet<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let substitute = local_interfaces
        .iter()
        .find(|name| name.as_str() != "lo")
        .or_else(|| local_interfaces.iter().next())
        .cloned()
        .unwrap_or_else(|| "lo".to_owned());
    for rendered in render_all() {
        for (host, file) in rendered.expect_files("/etc/keepalived/keepalived.conf") {
            let text = fs::read_to_string(&file).expect("read keepalived.conf");
            let interface = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("interface "))
                .map(str::trim)
                .unwrap_or_else(|| {
                    panic!(
                        "{}/{host}: keepalived.conf names no interface",
                        rendered.inventory
                    )
                })
                .to_owned();
            let checked = if local_interfaces.contains(&interface) {
                file.clone()
            } else {
                let copy = file.with_extension("conf.local-interface");
                let text = text
                    .replace(
                        &format!("interface {interface}"),
                        &format!("interface {substitute}"),
                    )
                    .replace(&format!("dev {interface}"), &format!("dev {substitute}"));
                fs::write(&copy, text).expect("write keepalived.conf copy");
                copy
            };
            let output = run(Command::new(&keepalived)
                .arg("--config-test")
                .arg("-l")
                .arg("-f")
                .arg(&checked));
            assert!(
                output.status.success(),
                "{}/{host}: keepalived -t rejects keepalived.conf: {}",
                rendered.inventory,
                describe(&output)
            );
        }
    }
}

/// Patroni 3.0.2's validator binds-tests every `listen` address (it must be free and local) and
/// connects to every etcd host (it must answer). The rendered addresses belong to the inventory's
/// hosts, so the copy validated here differs in exactly those values: each `listen:` becomes a free
/// port on 127.0.0.1 and each etcd3 host a listener this test holds open. Everything else —
/// authentication, bin_dir (needs postgresql-15), watchdog, tags, bootstrap — is checked as rendered.
fn patroni_copy_for_this_machine(text: &str, etcd_port: u16) -> String {
    let mut out = Vec::new();
    let mut listens = 0;
    let mut etcd_hosts = 0;
    let mut in_etcd_hosts = false;
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim_start();
        if in_etcd_hosts && !trimmed.starts_with("- ") {
            in_etcd_hosts = false;
        }
        if trimmed.starts_with("listen:") {
            listens += 1;
            out.push(format!("{indent}listen: 127.0.0.1:{}", free_port()));
        } else if in_etcd_hosts {
            etcd_hosts += 1;
            out.push(format!("{indent}- 127.0.0.1:{etcd_port}"));
        } else {
            // Patroni's etcd3 (v3 API) or etcd (v2 API, Debian 12) section.
            if trimmed == "hosts:"
                && out
                    .last()
                    .is_some_and(|l: &String| l.trim() == "etcd3:" || l.trim() == "etcd:")
            {
                in_etcd_hosts = true;
            }
            out.push(line.to_owned());
        }
    }
    assert_eq!(
        listens, 2,
        "expected restapi.listen and postgresql.listen in:\n{text}"
    );
    assert!(
        etcd_hosts > 0,
        "expected etcd3.hosts or etcd.hosts as a list in:\n{text}"
    );
    out.join("\n") + "\n"
}

#[test]
fn patroni_validates_the_rendered_configuration() {
    let Some(patroni) = program("patroni", "patroni", "patroni --validate-config") else {
        return;
    };
    let etcd = TcpListener::bind("127.0.0.1:0").expect("stand-in etcd listener");
    let etcd_port = etcd.local_addr().expect("listener address").port();
    let mut checked = 0;
    for rendered in render_all() {
        for (host, file) in rendered.expect_files("/etc/patroni/config.yml") {
            let text = fs::read_to_string(&file).expect("read config.yml");
            let bin_dir = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("bin_dir:"))
                .map(str::trim)
                .expect("postgresql.bin_dir is set")
                .to_owned();
            if !Path::new(&bin_dir).join("postgres").is_file() {
                skipped(
                    "patroni --validate-config",
                    &format!("{bin_dir}/postgres is missing (apt-get install postgresql: the release's own; Patroni checks bin_dir)"),
                );
                return;
            }
            let copy = file.with_extension("yml.local");
            fs::write(&copy, patroni_copy_for_this_machine(&text, etcd_port))
                .expect("write config copy");
            let output = run(Command::new(&patroni).arg("--validate-config").arg(&copy));
            assert!(
                output.status.success(),
                "{}/{host}: patroni --validate-config rejects config.yml: {}",
                rendered.inventory,
                describe(&output)
            );
            checked += 1;

            // The validator is alive: it rejects what Patroni 3.0.2 is known to reject (an unquoted
            // `off`, which YAML reads as false), so the pass above means something.
            let broken = fs::read_to_string(&copy)
                .expect("read copy")
                .replace("mode: \"off\"", "mode: off");
            fs::write(&copy, broken).expect("write broken copy");
            let output = run(Command::new(&patroni).arg("--validate-config").arg(&copy));
            assert!(
                !output.status.success(),
                "patroni --validate-config accepted `watchdog: {{mode: off}}`"
            );
        }
    }
    assert!(checked > 0);
}

/// Start PgBouncer on a copy of pgbouncer.ini and wait for "process up". PgBouncer has no check
/// mode, and it logs a broken auth_file only as an ERROR and runs on, so the log is read too.
/// The copy differs in what would touch this machine's PgBouncer: listen_addr/listen_port (a free
/// port on 127.0.0.1), unix_socket_dir, pidfile and auth_file (in a temporary directory).
#[test]
fn pgbouncer_starts_with_the_rendered_configuration() {
    let Some(pgbouncer) = program("pgbouncer", "pgbouncer", "pgbouncer start-up") else {
        return;
    };
    let root = is_root();
    for rendered in render_all() {
        for (host, file) in rendered.expect_files("/etc/pgbouncer/pgbouncer.ini") {
            let work = tempfile::tempdir().expect("temporary directory");
            // As root PgBouncer refuses to run unless told to drop to another user (-u nobody),
            // who must be able to read the copies and write the pid file and socket.
            fs::set_permissions(work.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
            let userlist = file.with_file_name("userlist.txt");
            assert!(
                userlist.is_file(),
                "{}/{host}: no userlist.txt next to pgbouncer.ini",
                rendered.inventory
            );
            let auth_file = work.path().join("userlist.txt");
            fs::copy(&userlist, &auth_file).expect("copy userlist.txt");
            let port = free_port();
            let mut rewritten = BTreeSet::new();
            let text: Vec<String> = fs::read_to_string(&file)
                .expect("read pgbouncer.ini")
                .lines()
                .map(|line| {
                    let key = line.split('=').next().unwrap_or("").trim().to_owned();
                    let value = match key.as_str() {
                        "listen_addr" => "127.0.0.1".to_owned(),
                        "listen_port" => port.to_string(),
                        "unix_socket_dir" => work.path().display().to_string(),
                        "pidfile" => work.path().join("pgbouncer.pid").display().to_string(),
                        "auth_file" => auth_file.display().to_string(),
                        "logfile" => String::new(),
                        // TLS files: the rendered ones, copied where `nobody` can read them.
                        "client_tls_cert_file"
                        | "client_tls_key_file"
                        | "client_tls_ca_file"
                        | "server_tls_ca_file" => {
                            let rendered_path = line.split('=').nth(1).unwrap_or("").trim();
                            let source = file
                                .parent()
                                .expect("pgbouncer.ini has a directory")
                                .join(rendered_path.trim_start_matches("/etc/pgbouncer/"));
                            let copy = work.path().join(key.as_str());
                            fs::copy(&source, &copy).unwrap_or_else(|e| {
                                panic!(
                                    "{}/{host}: {key} = {rendered_path} was not rendered: {e}",
                                    rendered.inventory
                                )
                            });
                            fs::set_permissions(&copy, fs::Permissions::from_mode(0o644))
                                .expect("chmod");
                            copy.display().to_string()
                        }
                        _ => return line.to_owned(),
                    };
                    rewritten.insert(key.clone());
                    format!("{key} = {value}")
                })
                .collect();
            for key in ["listen_addr", "listen_port", "auth_file"] {
                assert!(
                    rewritten.contains(key),
                    "{}/{host}: pgbouncer.ini has no {key}",
                    rendered.inventory
                );
            }
            let ini = work.path().join("pgbouncer.ini");
            fs::write(&ini, text.join("\n") + "\n").expect("write pgbouncer.ini copy");
            for path in [&ini, &auth_file] {
                fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
            }

            let mut command = Command::new(&pgbouncer);
            command.arg("-v");
            if root {
                command.arg("-u").arg("nobody");
            }
            let mut child = command
                .arg(&ini)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start pgbouncer");
            let stderr = child.stderr.take().expect("piped stderr");
            let (lines_tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut log = Vec::new();
            let mut up = false;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match lines.recv_timeout(left) {
                    Ok(line) => {
                        up |= line.contains("process up");
                        log.push(line);
                        if up {
                            break;
                        }
                    }
                    Err(_) => break, // timed out, or PgBouncer exited
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            while let Ok(line) = lines.try_recv() {
                log.push(line);
            }
            let problems: Vec<&String> = log
                .iter()
                .filter(|l| {
                    [" ERROR ", " FATAL ", " WARNING "]
                        .iter()
                        .any(|level| l.contains(level))
                })
                .collect();
            assert!(
                up && problems.is_empty(),
                "{}/{host}: pgbouncer did not start cleanly with pgbouncer.ini + userlist.txt:\n{}",
                rendered.inventory,
                if problems.is_empty() {
                    log.join("\n")
                } else {
                    problems
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            );
        }
    }
}

/// etcd reads /etc/default/etcd as `ETCD_*` environment variables and silently ignores (with a log
/// line) the ones it does not know: each must be a flag `etcd --help` lists. The values must make a
/// consistent cluster: the member's own peer URL is in the initial cluster, every member of a
/// cluster has the same initial cluster and token, and no cluster uses Debian's default data dir.
#[test]
fn etcd_environment_uses_only_flags_etcd_knows() {
    let Some(etcd) = program("etcd", "etcd-server", "etcd environment") else {
        return;
    };
    let help = run(Command::new(&etcd).arg("--help"));
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    let flags: BTreeSet<String> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect();
    assert!(
        flags.contains("--initial-cluster"),
        "cannot read the flags from `etcd --help`:\n{help}"
    );
    for rendered in render_all() {
        // token → (initial cluster, data dir) per member, to compare members of one cluster.
        let mut clusters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (host, file) in rendered.expect_files("/etc/default/etcd") {
            let place = format!("{}/{host}: /etc/default/etcd(-initial)", rendered.inventory);
            let mut env = BTreeMap::new();
            // etcd.service reads both: the initial cluster lives apart (changing it restarts
            // nobody), the unit's drop-in adds it as a second EnvironmentFile.
            let initial = file.with_file_name("etcd-initial");
            let text = fs::read_to_string(&file).expect("read etcd env")
                + &fs::read_to_string(&initial).expect("read etcd-initial env");
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{place}: not KEY=VALUE: {line}"));
                let flag = format!(
                    "--{}",
                    key.strip_prefix("ETCD_")
                        .unwrap_or_else(|| panic!("{place}: {key} is not an ETCD_ variable"))
                        .to_lowercase()
                        .replace('_', "-")
                );
                assert!(
                    flags.contains(&flag),
                    "{place}: {key} is not a flag of this etcd ({flag})"
                );
                assert!(
                    env.insert(key.to_owned(), value.to_owned()).is_none(),
                    "{place}: {key} set twice"
                );
            }
            let get = |key: &str| {
                env.get(key)
                    .unwrap_or_else(|| panic!("{place}: {key} is not set"))
                    .clone()
            };
            let name = get("ETCD_NAME");
            let peer_url = get("ETCD_INITIAL_ADVERTISE_PEER_URLS");
            let initial = get("ETCD_INITIAL_CLUSTER");
            assert!(
                initial.split(',').any(|m| m == format!("{name}={peer_url}")),
                "{place}: ETCD_INITIAL_CLUSTER={initial} does not contain this member {name}={peer_url}"
            );
            for key in [
                "ETCD_LISTEN_PEER_URLS",
                "ETCD_LISTEN_CLIENT_URLS",
                "ETCD_ADVERTISE_CLIENT_URLS",
                "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            ] {
                for url in get(key).split(',') {
                    // TLS by default (tls.enabled): https everywhere, with the files named.
                    let port = url
                        .strip_prefix("https://")
                        .and_then(|hp| hp.rsplit_once(':'))
                        .map(|(_, p)| p);
                    assert!(
                        port.is_some_and(|p| p.parse::<u16>().is_ok()),
                        "{place}: {key}: `{url}` is not https://ADDRESS:PORT"
                    );
                }
            }
            for key in ["ETCD_CLIENT_CERT_AUTH", "ETCD_PEER_CLIENT_CERT_AUTH"] {
                assert_eq!(
                    get(key),
                    "true",
                    "{place}: {key}: clients must present a certificate"
                );
            }
            for key in [
                "ETCD_CERT_FILE",
                "ETCD_KEY_FILE",
                "ETCD_TRUSTED_CA_FILE",
                "ETCD_PEER_CERT_FILE",
                "ETCD_PEER_KEY_FILE",
                "ETCD_PEER_TRUSTED_CA_FILE",
            ] {
                let path = get(key);
                let rendered_file = file
                    .parent()
                    .and_then(Path::parent)
                    .map(|etc| etc.join(path.trim_start_matches("/etc/")));
                assert!(
                    rendered_file.is_some_and(|f| f.is_file()),
                    "{place}: {key}={path} is not a file pgstrap renders"
                );
            }
            assert!(
                ["new", "existing"].contains(&get("ETCD_INITIAL_CLUSTER_STATE").as_str()),
                "{place}: bad ETCD_INITIAL_CLUSTER_STATE"
            );
            assert_ne!(
                get("ETCD_DATA_DIR"),
                "/var/lib/etcd/default",
                "{place}: a package-started etcd would share this data dir"
            );
            // The v2 API exactly where Patroni uses its etcd (v2) client: Debian 12.
            let v2 = if machine_release() == "12" {
                "true"
            } else {
                "false"
            };
            assert_eq!(
                get("ETCD_ENABLE_V2"),
                v2,
                "{place}: the v2 API must be on only for Patroni's etcd v2 client (Debian 12)"
            );
            clusters
                .entry(get("ETCD_INITIAL_CLUSTER_TOKEN"))
                .or_default()
                .insert(initial);
        }
        for (token, initial) in clusters {
            assert_eq!(
                initial.len(),
                1,
                "{}: members of {token} disagree on ETCD_INITIAL_CLUSTER: {initial:?}",
                rendered.inventory
            );
        }
    }
}

/// pg_hba (Patroni writes it) allows nothing from everywhere and nothing without a password
/// except the local superuser by peer.
#[test]
fn pg_hba_is_not_open_to_the_world() {
    for rendered in render_all() {
        for (host, file) in rendered.expect_files("/etc/patroni/config.yml") {
            for line in fs::read_to_string(&file).expect("read config.yml").lines() {
                let entry = line.trim().trim_start_matches("- ").trim_matches('"');
                let fields: Vec<&str> = entry.split_whitespace().collect();
                let Some(kind) = fields.first() else { continue };
                if !["local", "host", "hostssl", "hostnossl"].contains(kind) {
                    continue;
                }
                let method = fields.last().copied().unwrap_or_default();
                let place = format!("{}/{host}: pg_hba `{entry}`", rendered.inventory);
                assert!(
                    !entry.contains("0.0.0.0/0") && !entry.contains("::/0"),
                    "{place}: open to the world"
                );
                assert!(
                    ["scram-sha-256", "peer"].contains(&method),
                    "{place}: method must be scram-sha-256 (or peer locally)"
                );
                assert!(
                    method != "peer" || *kind == "local",
                    "{place}: peer is for local connections"
                );
            }
        }
    }
}

/// The scripts pgstrap installs for Patroni parse: the fence check (`sh -n`), the callback
/// that moves etcd's leadership off the primary's host and the wake after a reload (Python's own
/// compiler).
#[test]
fn the_scripts_patroni_runs_parse() {
    let scripts = [
        ("/usr/local/lib/pgstrap/patroni-fence-check", "sh", "dash"),
        (
            "/usr/local/lib/pgstrap/patroni-etcd-leader-away",
            "python3",
            "python3",
        ),
        ("/usr/local/lib/pgstrap/patroni-wake", "python3", "python3"),
    ];
    let rendered = render_all();
    for (path, interpreter, package) in scripts {
        let files: Vec<_> = rendered.iter().flat_map(|r| r.files(path)).collect();
        assert!(!files.is_empty(), "no host of the examples got {path}");
        let Some(program) = program(
            interpreter,
            package,
            &format!("{interpreter} parses {path}"),
        ) else {
            continue;
        };
        for (host, file) in files {
            let output = if interpreter == "sh" {
                run(Command::new(&program).arg("-n").arg(&file))
            } else {
                let check = "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])";
                run(Command::new(&program).arg("-c").arg(check).arg(&file))
            };
            assert!(
                output.status.success(),
                "{host}: {path}: {}",
                describe(&output)
            );
        }
    }
}

#[test]
fn createcluster_conf_disables_the_main_cluster() {
    for rendered in render_all() {
        let files = rendered.expect_files("/etc/postgresql-common/createcluster.d/00-pgstrap.conf");
        for (host, file) in files {
            match program(
                "pg_conftool",
                "postgresql-common",
                "pg_conftool createcluster.d",
            ) {
                Some(tool) => {
                    let output = run(Command::new(tool)
                        .arg(&file)
                        .arg("show")
                        .arg("-bs")
                        .arg("create_main_cluster"));
                    assert_eq!(
                        String::from_utf8_lossy(&output.stdout).trim(),
                        "off",
                        "{}/{host}: {}",
                        rendered.inventory,
                        describe(&output)
                    );
                }
                None => {
                    let text = fs::read_to_string(&file).expect("read");
                    assert!(
                        text.lines()
                            .any(|l| l.trim() == "create_main_cluster = false"),
                        "{}/{host}",
                        rendered.inventory
                    );
                }
            }
        }
    }
}

/// With `apt.proxy` set, every host gets an apt configuration apt itself reads back.
#[test]
fn apt_reads_the_rendered_proxy_setting() {
    let proxy = "http://10.99.0.1:3142";
    let rendered = render("single-dc", &format!("\napt:\n  proxy: {proxy}\n"));
    let files = rendered.expect_files("/etc/apt/apt.conf.d/90pgstrap-proxy");
    let hosts = fs::read_dir(&rendered.out).expect("out").count();
    assert_eq!(files.len(), hosts, "every host needs the proxy file");
    let Some(apt_config) = program("apt-config", "apt", "apt-config") else {
        return;
    };
    for (host, file) in files {
        let output = run(Command::new(&apt_config).arg("-c").arg(&file).arg("dump"));
        let dump = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && dump.contains(&format!("Acquire::http::Proxy \"{proxy}\"")),
            "{host}: apt-config does not read the proxy: {}",
            describe(&output)
        );
    }
}

/// Every host tells unattended-upgrades to leave the stack's packages alone (apt reads the list
/// back) and needrestart to leave its services alone (perl compiles and runs the file the way
/// needrestart does: `%nrconf` filled by `do FILE`).
#[test]
fn apt_and_perl_read_the_restart_holds() {
    let rendered = render("single-dc", "");
    let hosts = fs::read_dir(&rendered.out).expect("out").count();
    let apt_files = rendered.expect_files("/etc/apt/apt.conf.d/51pgstrap-unattended-upgrades");
    let perl_files = rendered.expect_files("/etc/needrestart/conf.d/50-pgstrap.conf");
    assert_eq!(apt_files.len(), hosts);
    assert_eq!(perl_files.len(), hosts);
    if let Some(apt_config) = program("apt-config", "apt", "apt-config") {
        for (host, file) in apt_files {
            let output = run(Command::new(&apt_config).arg("-c").arg(&file).arg("dump"));
            let dump = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success()
                    && dump.contains("Unattended-Upgrade::Package-Blacklist:: \"patroni\";"),
                "{host}: apt-config does not read the blacklist: {}",
                describe(&output)
            );
        }
    }
    if let Some(perl) = program("perl", "perl-base", "perl") {
        for (host, file) in perl_files {
            let script = format!(
                "our %nrconf; do '{}'; die $@ if $@; my @keys = keys %{{$nrconf{{override_rc}}}}; die 'no override' unless grep {{ 'patroni.service' =~ $_ }} @keys; print scalar(@keys)",
                file.display()
            );
            let output = run(Command::new(&perl).arg("-e").arg(&script));
            assert!(
                output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "6",
                "{host}: perl does not read the needrestart override: {}",
                describe(&output)
            );
        }
    }
}
