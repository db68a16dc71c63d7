//! End-to-end: the day-to-day operations on the shared Debian 13 cluster, under a client writing
//! through the VIP: `restart` of one replica and of every member (one switchover), `reinit` of a
//! replica whose data directory was damaged on purpose (the old one kept aside), `pause` and a
//! power cut of the primary while paused (no failover: the cluster stays without a leader and
//! `status` says why), `failover --to` a replica, `resume`, the former primary back as a
//! replica, and `history` counting exactly the two timeline switches made here. No
//! acknowledged write is lost, no member diverges, and a second apply changes nothing.
//! `#[ignore]`d: runs only with `--ignored` and `PGSTRAP_E2E=1` (tests/run.sh).

mod common;

use common::{ip, pgstrap, pgstrap_ok, require_e2e, run_on, vip};

/// PostgreSQL's package on the hosts of the release the test runs on (`PGSTRAP_E2E_RELEASE`).
fn postgresql_package() -> &'static str {
    if common::release() == "12" {
        "postgresql-15"
    } else {
        "postgresql-17"
    }
}

/// The member's data directory on that release.
fn data_dir() -> String {
    format!(
        "/var/lib/postgresql/{}/main",
        postgresql_package().trim_start_matches("postgresql-")
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `fields` of each member in a JSON list of members.
fn fields(members: &serde_json::Value, fields: &[&str]) -> Vec<Vec<String>> {
    members
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    fields
                        .iter()
                        .map(|k| m[*k].as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster's members from `status --json`: (name, address, role).
fn members(inventory: &str) -> Vec<(String, String, String)> {
    let status = json(&common::status(&["--json", "-i", inventory]));
    fields(
        &status["clusters"][0]["patroni"]["members"],
        &["name", "host", "role"],
    )
    .into_iter()
    .map(|f| (f[0].clone(), f[1].clone(), f[2].clone()))
    .collect()
}

/// The members and their roles in Patroni's `GET /cluster`, asked on `address` itself.
fn roles(address: &str) -> Vec<(String, String)> {
    let text = run_on(
        address,
        &format!(
            "curl -s --max-time 2 --cacert /etc/patroni/tls/ca.crt https://{address}:8008/cluster"
        ),
    );
    fields(&json(&text)["members"], &["name", "role"])
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect()
}

/// No member diverged: every one holds the same writes up to a point they all passed (the
/// client still writing).
fn assert_no_member_diverged(inventory: &str) {
    let (_, leader_address) = common::leader(inventory, "main");
    let sql = |address: &str, query: &str| {
        run_on(
            address,
            &format!("runuser -u postgres -- psql -XAt -d postgres -c \"{query}\""),
        )
    };
    let upto = sql(&leader_address, "SELECT max(id) FROM pgstrap_drill.writes");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let count = format!("SELECT count(*) FROM pgstrap_drill.writes WHERE id <= {upto}");
    let expected = sql(&leader_address, &count);
    for (name, address, _) in members(inventory) {
        assert_eq!(sql(&address, &count), expected, "{name} diverged");
    }
}

fn timeline_switches(inventory: &str) -> usize {
    json(&pgstrap_ok(&["history", "-i", inventory, "--json"]))["switches"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Poll (at most `seconds`) until `done` holds; panics with `what` otherwise.
fn until(seconds: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
#[ignore = "e2e: needs real lab hosts (PGSTRAP_E2E=1, tests/run.sh)"]
fn day_to_day_operations_lose_no_write() {
    require_e2e();
    let inventory = common::take(common::main_of_release());
    let switches_before = timeline_switches(&inventory);
    let (leader, _) = common::leader(&inventory, "main");
    let replica = members(&inventory)
        .into_iter()
        .find(|(name, _, role)| *name != leader && role == "replica")
        .expect("a replica");
    // A person's way in: `pgstrap ssh` (host keys checked) and `pgstrap psql` through the VIP
    // (TLS verified against the inventory's CA; the primary on the write port, a replica on
    // the read port).
    let output = pgstrap(&["ssh", "-i", &inventory, "n1", "--", "hostname"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "n1");
    for (args, in_recovery) in [(vec![], "f"), (vec!["--replica"], "t")] {
        let mut command = vec!["psql", "-i", &inventory];
        command.extend(args);
        command.extend(["--", "-XAtc", "SELECT pg_is_in_recovery()"]);
        let output = pgstrap(&command);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            in_recovery,
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    report_holds_no_secret(&inventory);

    let mut writer = common::Writer::start(&inventory, &vip());

    // One replica, then every member: the replicas one at a time, one switchover.
    let one = json(&writer.step("restart of one replica", || {
        pgstrap_ok(&[
            "restart", "-i", &inventory, "--member", &replica.0, "--yes", "--json",
        ])
    }));
    assert_eq!(one["steps"][0], format!("restarted replica {}", replica.0));
    let all = json(&writer.step("rolling restart of every member", || {
        pgstrap_ok(&["restart", "-i", &inventory, "--yes", "--json"])
    }));
    let steps: Vec<&str> = all["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.starts_with("switched over"))
            .count(),
        1,
        "{steps:?}"
    );

    // A replica whose data directory is damaged: rebuilt, the damaged one kept.
    let replica = members(&inventory)
        .into_iter()
        .find(|(_, _, role)| role == "replica")
        .expect("a replica after the restart");
    let replica_address = replica.1.clone();
    let output = pgstrap(&[
        "reinit",
        "-i",
        &inventory,
        "--member",
        &leader_now(&inventory),
    ]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "reinit of the leader was not refused"
    );
    run_on(
        &replica_address,
        &format!("rm -f {}/global/pg_control", data_dir()),
    );
    let rebuilt = json(&writer.step("reinit of a damaged replica", || {
        pgstrap_ok(&[
            "reinit", "-i", &inventory, "--member", &replica.0, "--yes", "--json",
        ])
    }));
    let aside = rebuilt["moved_aside"].as_str().expect("moved aside");
    assert_eq!(
        run_on(&replica_address, &format!("test -d {aside} && echo kept")),
        "kept"
    );
    assert_eq!(rebuilt["method"], "basebackup", "{rebuilt}");

    // Maintenance mode, then the primary's power cut: no failover.
    pgstrap_ok(&["pause", "-i", &inventory]);
    let status = common::status(&["-i", &inventory]);
    assert!(status.contains("MAINTENANCE MODE"), "{status}");
    let (primary, _) = common::leader(&inventory, "main");
    let output = pgstrap(&["drill", "kill-patroni", "-i", &inventory]);
    assert_eq!(output.status.code(), Some(2), "a drill ran while paused");
    // A restart while paused goes on, with a warning.
    let paused_restart = json(&writer.step("restart of one replica while paused", || {
        pgstrap_ok(&[
            "restart", "-i", &inventory, "--member", &replica.0, "--yes", "--json",
        ])
    }));
    assert!(
        paused_restart["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("maintenance mode")),
        "{paused_restart}"
    );
    writer.step(
        "power cut of the primary while paused, then failover",
        || {
            // Asked of a surviving member's REST API (every `status` waits for the dead
            // host's SSH connection to time out).
            let (to, via) = members(&inventory)
                .into_iter()
                .find(|(name, _, _)| *name != primary)
                .map(|(name, address, _)| (name, address))
                .expect("a candidate");
            pgstrap_ok(&["lab", "kill", &primary]);
            until(60, "the leader key to expire", || {
                roles(&via).iter().all(|(_, role)| role != "leader")
            });
            // Nobody took over on their own.
            std::thread::sleep(std::time::Duration::from_secs(3));
            let now = roles(&via);
            assert!(
                now.iter().all(|(_, role)| role == "replica"),
                "a replica was promoted while paused: {now:?}"
            );
            let status = common::status(&["-i", &inventory]);
            assert!(
                status.contains("no leader") && status.contains("pgstrap failover"),
                "{status}"
            );
            let report = json(&pgstrap_ok(&[
                "failover", "-i", &inventory, "--to", &to, "--yes", "--json",
            ]));
            assert_eq!(report["new_leader"], to.as_str());
            assert_eq!(report["last_leader"], primary.as_str());
        },
    );
    pgstrap_ok(&["resume", "-i", &inventory]);
    pgstrap_ok(&["lab", "start", &primary]);
    until(120, "the former primary to stream again", || {
        pgstrap(&["verify", "-i", &inventory]).status.success()
    });

    assert_no_member_diverged(&inventory);
    writer.finish("restarts, a reinit, a failover while paused");

    let history = json(&pgstrap_ok(&["history", "-i", &inventory, "--json"]));
    assert_eq!(
        history["switches"].as_array().map_or(0, Vec::len),
        switches_before + 2,
        "one switchover and one failover: {history}"
    );
    let output = pgstrap(&["apply", "-i", &inventory]);
    assert!(
        output.status.success()
            && String::from_utf8_lossy(&output.stderr).contains("done: 0 change(s)"),
        "the apply after the operations changed something"
    );
    common::give_back(common::main_of_release());
}

/// The support bundle: the status and every host's facts, journals and managed files, with no
/// secret value and no private key in it.
fn report_holds_no_secret(inventory: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("report.tar.gz");
    let output = pgstrap(&[
        "report",
        "-i",
        inventory,
        "--out",
        archive.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "pgstrap report failed");
    let unpacked = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(unpacked.success());
    let mut text = String::new();
    let mut files = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else if path != archive {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read"),
            ));
            files += 1;
        }
    }
    assert!(!text.contains("PRIVATE KEY"), "a private key in the report");
    let secrets = std::fs::read_to_string(format!("{}/inventory.secrets.yaml", common::dir()))
        .expect("secrets");
    for line in secrets.lines() {
        if let Some((name, value)) = line.split_once(": ") {
            let value = value.trim().trim_matches('"');
            assert!(
                !value.is_empty() && !text.contains(value),
                "secret {name} in the report"
            );
        }
    }
    assert!(
        files > 10 && text.contains("patroni"),
        "{files} files in the report"
    );
    eprintln!("figure: pgstrap report: {files} files, no secret, no private key");
}

fn leader_now(inventory: &str) -> String {
    common::leader(inventory, "main").0
}

/// A local apt repository on a lab host with the stack's packages as Debian ships them, only
/// re-versioned (`+pgstrapTIME` appended: newer than the installed ones) and repacked with
/// `dpkg-deb`, maintainer scripts untouched but for a planted failure: the postinst of patroni
/// exits 1 while `/etc/pgstrap-break-upgrade` exists. `$@`: the packages.
const LOCAL_UPDATES: &str = r#"set -eu
dir=/srv/pgstrap-updates
rm -f /etc/apt/sources.list.d/pgstrap-updates.list
apt-get update -qq >/dev/null
rm -rf "$dir" && mkdir -p "$dir/build" && cd "$dir/build"
# The mirror's version of each (a lab updated before runs newer ones), re-versioned newer than
# any earlier run's.
for p in "$@"; do
  apt-get download -q "$p=$(apt-cache madison "$p" | awk 'NR == 1 { print $3 }')" >/dev/null
done
suffix="+pgstrap$(date +%s)"
for deb in *.deb; do
  rm -rf x && dpkg-deb -R "$deb" x
  sed -i "s/^Version: .*/&$suffix/" x/DEBIAN/control
  if grep -q '^Package: patroni$' x/DEBIAN/control; then
    if [ ! -f x/DEBIAN/postinst ]; then printf '#!/bin/sh\nset -e\n' > x/DEBIAN/postinst; chmod 0755 x/DEBIAN/postinst; fi
    sed -i '2i [ -e /etc/pgstrap-break-upgrade ] \&\& { echo "planted failure" >&2; exit 1; }' x/DEBIAN/postinst
  fi
  dpkg-deb -Znone -b x "$dir/$(basename "$deb" .deb)$suffix.deb" >/dev/null
done
cd "$dir" && rm -rf build
for deb in *.deb; do
  dpkg-deb -f "$deb"
  echo "Filename: ./$deb"; echo "Size: $(stat -c %s "$deb")"; echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"; echo
done > Packages
{
  echo "Origin: pgstrap-tests"; echo "Label: pgstrap-tests"; echo "Suite: pgstrap-updates"
  echo "Date: $(date -R -u)"; echo "Architectures: amd64 all"; echo "SHA256:"
  echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"
} > Release
echo "deb [trusted=yes] file:$dir ./" > /etc/apt/sources.list.d/pgstrap-updates.list
"#;

#[test]
#[ignore = "e2e: needs real lab hosts (PGSTRAP_E2E=1, tests/run.sh)"]
fn update_costs_one_switchover_and_resumes_after_a_failed_package() {
    require_e2e();
    let inventory = common::take(common::main_of_release());
    let switches_before = timeline_switches(&inventory);
    let (leader, _) = common::leader(&inventory, "main");
    let db: Vec<(String, String, String)> = members(&inventory);
    let broken = db
        .iter()
        .find(|(name, _, _)| *name != leader)
        .expect("a replica")
        .clone();
    // Newer versions of PostgreSQL, Patroni and etcd on the DB hosts, of HAProxy on the
    // balancers, served from each host's own local repository.
    let project = pgstrap::project::load(std::path::Path::new(&inventory), &[]).unwrap();
    let packages_of_db_hosts = format!("{} patroni etcd-server", postgresql_package());
    let builds: Vec<_> = project
        .inventory
        .hosts
        .values()
        .map(|host| {
            let packages = if host.name.starts_with("n4") || host.name.starts_with("n5") {
                "haproxy"
            } else {
                &packages_of_db_hosts
            };
            let address = host.address.to_string();
            let script = format!("sh -c {} sh {packages}", shell_quote(LOCAL_UPDATES));
            std::thread::spawn(move || run_on(&address, &script))
        })
        .collect();
    for build in builds {
        build.join().expect("a local repository");
    }
    run_on(&broken.1, "touch /etc/pgstrap-break-upgrade");
    // Two hosts need a reboot (`--reboot`): the other replica and the balancer holding the VIP.
    let rebooted: Vec<(String, String)> = db
        .iter()
        .filter(|(name, _, _)| *name != leader && *name != broken.0)
        .map(|(name, address, _)| (name.clone(), address.clone()))
        .chain(
            [("n4", &ip("n4")), ("n5", &ip("n5"))]
                .into_iter()
                .filter(|(_, address)| {
                    run_on(address, "ip -o -4 addr show").contains(&format!(" {}/", vip()))
                })
                .map(|(name, address)| (name.to_owned(), address.to_owned())),
        )
        .collect();
    assert_eq!(
        rebooted.len(),
        2,
        "a replica and the VIP holder: {rebooted:?}"
    );
    let boot_ids: Vec<String> = rebooted
        .iter()
        .map(|(_, address)| {
            run_on(
                address,
                "touch /var/run/reboot-required && cat /proc/sys/kernel/random/boot_id",
            )
        })
        .collect();

    let plan = json(&pgstrap_ok(&[
        "update", "-i", &inventory, "--plan", "--json",
    ]));
    let planned = plan["hosts"].as_array().expect("hosts");
    assert_eq!(planned.len(), 5, "every host has updates: {plan}");
    // The balancers first, the primary's host last.
    assert_eq!(planned[4]["host"], leader.as_str(), "{plan}");
    let db_host = planned
        .iter()
        .find(|h| h["host"] == broken.0.as_str())
        .expect("the replica in the plan");
    assert!(db_host["postgresql"].is_array(), "{db_host}");

    let mut writer = common::Writer::start(&inventory, &vip());
    let reader = common::Reader::start(&inventory, &vip(), 5001);
    let output = writer.step("update, stopped by a failing package", || {
        pgstrap(&["update", "-i", &inventory, "--yes", "--reboot"])
    });
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&broken.0) && text.contains("patroni"),
        "the error names neither the host nor the package: {text}"
    );
    run_on(&broken.1, "rm /etc/pgstrap-break-upgrade");
    let output = writer.step("update resumed", || {
        pgstrap(&["update", "-i", &inventory, "--yes", "--reboot", "--json"])
    });
    // Each step with its time into the run, beside the writer's gaps.
    eprintln!("{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the resumed update failed");
    let report = json(&String::from_utf8_lossy(&output.stdout));
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(
        steps.iter().filter(|s| s.contains("switched over")).count(),
        1,
        "{steps:?}"
    );
    until(120, "every member streams", || {
        pgstrap(&["verify", "-i", &inventory]).status.success()
    });
    assert_no_member_diverged(&inventory);
    writer.finish("an update of every host");
    let reads = reader.finish("an update of every host");
    assert!(reads.attempted > 0);
    // Every replica is drained from the read port before it is touched and a switchover drains
    // its candidate first: what a read can still meet is the VIP moving (the VIP holder's
    // reboot), which cuts the connection in flight through it.
    assert!(
        reads.failed <= 2,
        "{} of {} reads failed: {:?}",
        reads.failed,
        reads.attempted,
        reads.errors
    );
    // Rebooted (a new boot id), once, and said so.
    for ((name, address), before) in rebooted.iter().zip(&boot_ids) {
        assert_ne!(
            &run_on(address, "cat /proc/sys/kernel/random/boot_id"),
            before,
            "{name} was not rebooted"
        );
        // In the run that stopped (told on stderr as it went) or in the one that resumed.
        let said = format!("{name}: rebooted");
        assert_eq!(
            text.lines().filter(|l| l.contains(&said)).count()
                + steps.iter().filter(|s| s.starts_with(&said)).count(),
            1,
            "{name}: {text}\n{steps:?}"
        );
    }

    // Every host on the new versions, one new timeline, nothing left to update.
    let status = json(&common::status(&["--json", "-i", &inventory]));
    for host in status["hosts"].as_array().expect("hosts") {
        let packages = &host["packages"];
        let name = host["name"].as_str().unwrap_or_default();
        let key = if name == "n4" || name == "n5" {
            "haproxy"
        } else {
            postgresql_package()
        };
        assert!(
            packages[key]
                .as_str()
                .is_some_and(|v| v.contains("+pgstrap")),
            "{name}: {packages}"
        );
    }
    assert_eq!(timeline_switches(&inventory), switches_before + 1);
    let again = json(&pgstrap_ok(&[
        "update", "-i", &inventory, "--plan", "--json",
    ]));
    assert_eq!(again["hosts"].as_array().map(Vec::len), Some(0), "{again}");
    for (_, address, _) in members(&inventory) {
        run_on(
            &address,
            "rm -f /etc/apt/sources.list.d/pgstrap-updates.list",
        );
    }
    for address in [&ip("n4"), &ip("n5")] {
        run_on(
            address,
            "rm -f /etc/apt/sources.list.d/pgstrap-updates.list",
        );
    }
    common::give_back(common::main_of_release());
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
