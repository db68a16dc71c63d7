//! Preflight: before anything changes, check every host at once — reachable, a supported Debian
//! release (one per cluster, shipping the PostgreSQL asked for), enough
//! disk, clock in step with this machine, the stack's ports free (or held by the service that
//! should hold them), its own name resolving — and report every problem in one list.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::connect::{RemoteCommand, Session};
use crate::state::HostState;

/// One script per host: one round trip. The release and container come from the facts' own
/// sections (`facts::host_sections`), the rest from `KEY=VALUE` lines in a `preflight` section.
pub fn script() -> String {
    format!(
        "set -u\n{}{}{CHECKS}",
        crate::facts::host_sections(),
        crate::facts::section_mark("preflight")
    )
}

/// Preflight's own checks, after the shared sections.
const CHECKS: &str = r#"echo "disk_kb=$(df -Pk /var/lib 2>/dev/null | awk 'NR==2 {print $4}')"
echo "clock=$(date +%s.%N)"
h=$(hostname)
if getent hosts "$h" >/dev/null 2>&1; then echo "resolves=yes"; else echo "resolves=no $h"; fi
ss -ltnpH 2>/dev/null | awk '{print "listen=" $4 " " $6}'
"#;

/// What the preflight script reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostFacts {
    pub os: String,
    pub container: Option<String>,
    pub disk_free_kb: Option<u64>,
    pub clock: Option<f64>,
    pub hostname_resolves: bool,
    pub hostname: String,
    /// Listening TCP port → process name (empty when unknown).
    pub listening: BTreeMap<u16, String>,
}

/// Parse the script's output (pure; tested on captured output).
pub fn parse(text: &str) -> HostFacts {
    let sections = crate::facts::sections(text);
    let section = |name: &str| sections.get(name).map_or("", String::as_str);
    let os = crate::facts::parse_os_release(section("os"));
    let known = |value: String| {
        if value.is_empty() {
            "unknown".to_owned()
        } else {
            value
        }
    };
    let mut facts = HostFacts {
        os: format!("{} {}", known(os.id), known(os.version_id)),
        container: crate::facts::parse_container(section("container")),
        ..HostFacts::default()
    };
    for line in section("preflight").lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "disk_kb" => facts.disk_free_kb = value.trim().parse().ok(),
            "clock" => facts.clock = value.trim().parse().ok(),
            "resolves" => {
                facts.hostname_resolves = value.starts_with("yes");
                facts.hostname = value.trim_start_matches("no").trim().to_owned();
            }
            "listen" => {
                let mut parts = value.split_whitespace();
                let address = parts.next().unwrap_or("");
                let process = parts.next().unwrap_or("");
                if let Some(port) = address.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    let name = process
                        .split("((\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .unwrap_or("")
                        .to_owned();
                    facts.listening.entry(port).or_insert(name);
                }
            }
            _ => {}
        }
    }
    facts
}

/// One problem found by preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub host: String,
    pub message: String,
    pub hint: String,
    /// Warnings do not stop the rollout.
    pub warning: bool,
}

/// Which processes may hold a role's ports (re-running pgstrap finds its own services there).
fn owners(role: &str) -> &'static [&'static str] {
    match role {
        "etcd" => &["etcd"],
        "patroni" => &["patroni", "postgres"],
        "pgbouncer" => &["pgbouncer"],
        "haproxy" => &["haproxy"],
        _ => &[],
    }
}

/// Judge one host's facts against what it will run. `sent_at`/`received_at` bracket the script
/// (seconds since the epoch on this machine), to judge the host's clock.
pub fn judge(
    state: &HostState,
    facts: &HostFacts,
    sent_at: f64,
    received_at: f64,
    min_free_kb: u64,
) -> Vec<Problem> {
    let problem = |message: String, hint: &str, warning: bool| Problem {
        host: state.host.clone(),
        message,
        hint: hint.to_owned(),
        warning,
    };
    let mut problems = Vec::new();
    let releases = crate::role::releases();
    let supported = facts
        .os
        .strip_prefix("debian ")
        .is_some_and(|id| releases.get(id).is_some());
    if !supported {
        problems.push(problem(
            format!(
                "the host runs `{}`, not a supported Debian release",
                facts.os
            ),
            &format!(
                "pgstrap supports Debian {} with Debian's own packages",
                releases.supported()
            ),
            false,
        ));
    }
    match facts.disk_free_kb {
        Some(kb) if kb < min_free_kb => problems.push(problem(
            format!("only {} MiB free under /var/lib", kb / 1024),
            "the packages and a new cluster need at least 2 GiB: free some space or grow the disk",
            false,
        )),
        None => problems.push(problem(
            "cannot tell the free space under /var/lib".into(),
            "check that `df -Pk /var/lib` works on the host",
            true,
        )),
        _ => {}
    }
    if let Some(clock) = facts.clock {
        // The host read its clock between sending and receiving: allow for the round trip.
        let skew = if clock < sent_at {
            sent_at - clock
        } else if clock > received_at {
            clock - received_at
        } else {
            0.0
        };
        if skew > 2.0 {
            problems.push(problem(
                format!("its clock is {skew:.1}s away from this machine's"),
                "run a time sync daemon (systemd-timesyncd or chrony): etcd and Patroni leases need clocks in step",
                false,
            ));
        }
    }
    if !facts.hostname_resolves {
        problems.push(problem(
            format!("its own name `{}` does not resolve", facts.hostname),
            "add it to /etc/hosts or DNS (sudo and some tools look it up)",
            true,
        ));
    }
    for role in &state.roles {
        for (name, port) in &role.ports {
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            if let Some(process) = facts.listening.get(&port) {
                // The role's own services (a re-run), and the processes they start.
                let own = role.services.iter().any(|s| s.name == *process)
                    || owners(&role.role).contains(&process.as_str());
                if !own {
                    let holder = if process.is_empty() {
                        "another process".to_owned()
                    } else {
                        format!("`{process}`")
                    };
                    problems.push(problem(
                        format!(
                            "port {port} ({} {name}) is already in use by {holder}",
                            role.role
                        ),
                        "stop that service or choose another port in the inventory's vars",
                        false,
                    ));
                }
            }
        }
    }
    problems
}

/// Release problems of the whole inventory, from the releases learned from the hosts: a cluster
/// whose hosts run different releases (streaming replication needs one PostgreSQL major, and a
/// cluster's members must run the same versions), and a `postgresql.version` the host's release
/// does not ship.
pub fn judge_releases(project: &crate::project::Project) -> Vec<Problem> {
    let releases = crate::role::releases();
    let mut problems = Vec::new();
    for cluster in project.inventory.clusters.values() {
        let mut hosts: Vec<&String> = cluster.hosts().collect();
        hosts.sort();
        hosts.dedup();
        let mut by_release: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for host in &hosts {
            by_release
                .entry(project.release_of(host))
                .or_default()
                .push(host.as_str());
        }
        if by_release.len() > 1 {
            let seen: Vec<String> = by_release
                .iter()
                .map(|(release, hosts)| format!("Debian {release} on {}", hosts.join(", ")))
                .collect();
            problems.push(Problem {
                host: format!("cluster {}", cluster.name),
                message: format!("its hosts run different releases: {}", seen.join("; ")),
                hint: "streaming replication needs one PostgreSQL major on every member: run one Debian release per cluster (upgrade the others first)".into(),
                warning: false,
            });
        }
        if cluster.repository().is_some() || cluster.restore_of.is_some() {
            for (release_id, on) in &by_release {
                if let Some(why) = releases
                    .get(release_id)
                    .and_then(|r| r.backups_unsupported.as_ref())
                {
                    problems.push(Problem {
                        host: format!("cluster {}", cluster.name),
                        message: format!(
                            "backups are not supported on Debian {release_id} yet ({}): {why}",
                            on.join(", ")
                        ),
                        hint: "remove `backup:` (and `restore_of`) from this cluster, or run it on Debian 13".into(),
                        warning: false,
                    });
                }
            }
        }
        for name in &cluster.postgres {
            let Some(host) = project.inventory.hosts.get(name) else {
                continue;
            };
            let release_id = project.release_of(name);
            let Some(release) = releases.get(&release_id) else {
                continue;
            };
            let version = project.postgres_version(host, cluster);
            let ships = version
                .parse::<u32>()
                .is_ok_and(|v| release.postgresql.contains(&v));
            if !ships {
                let available: Vec<String> =
                    release.postgresql.iter().map(u32::to_string).collect();
                problems.push(Problem {
                    host: name.clone(),
                    message: format!(
                        "postgresql.version {version} is not shipped by {} (available: {})",
                        release.name,
                        available.join(", ")
                    ),
                    hint: format!(
                        "remove postgresql.version from the inventory to use the release's own ({}), or set one of: {}",
                        available.join(", "),
                        available.join(", ")
                    ),
                    warning: false,
                });
            }
        }
    }
    problems
}

/// What the running clusters impose (see `stack::live`): an inventory that asks a running
/// cluster's Patroni to move to the other etcd keyspace is refused; a Debian 12 cluster kept on
/// the v3 keyspace is warned about.
pub fn judge_live(project: &crate::project::Project) -> Vec<Problem> {
    use crate::settings::vars::Origin;
    let mut problems = Vec::new();
    for cluster in project.inventory.clusters.values() {
        let vars = project.cluster_vars(cluster);
        let Some((value, origin)) = vars.entries.get("patroni.dcs") else {
            continue;
        };
        let wanted = value.as_str().unwrap_or_default();
        match origin {
            Origin::Live(_) if wanted == "etcd3" && project.cluster_release(cluster) == "12" => {
                problems.push(Problem {
                    host: format!("cluster {}", cluster.name),
                    message: "its Patroni state lives in etcd's v3 keyspace: Debian 12's Patroni 3.0.2 can lose acknowledged writes after a network partition with it (upstream fix: 3.0.3)".into(),
                    hint: "pgstrap keeps a running cluster in its keyspace (moving it is not automated); new Debian 12 clusters use the v2 client. Rebuild this cluster or move it to Debian 13 to be safe".into(),
                    warning: true,
                });
            }
            Origin::Cluster(_) | Origin::Host(_) | Origin::CommandLine => {
                let live = project
                    .cluster_vars_without_inventory(cluster)
                    .get_str("patroni.dcs")
                    .unwrap_or_default();
                if project.is_live(cluster, "patroni.dcs") && live != wanted {
                    problems.push(Problem {
                        host: format!("cluster {}", cluster.name),
                        message: format!("the inventory sets patroni.dcs to `{wanted}`, but the running cluster keeps its state in `{live}`'s keyspace"),
                        hint: format!("Patroni would find an empty keyspace on its next start and could bootstrap a second primary: remove patroni.dcs from the inventory (or set it to `{live}`)"),
                        warning: false,
                    });
                }
            }
            _ => {}
        }
        if let Some(problem) = judge_live_tls(project, cluster) {
            problems.push(problem);
        }
    }
    problems
}

/// A cluster rolled out without TLS stays without it (learned from its etcd): a warning, or a
/// refusal when the inventory asks for TLS on it explicitly.
fn judge_live_tls(
    project: &crate::project::Project,
    cluster: &crate::inventory::Cluster,
) -> Option<Problem> {
    use crate::settings::vars::Origin;
    if !project.is_live(cluster, "tls.enabled") {
        return None;
    }
    let vars = project.cluster_vars(cluster);
    let (value, origin) = vars.entries.get("tls.enabled")?;
    let host = format!("cluster {}", cluster.name);
    match origin {
        Origin::Live(_) => Some(Problem {
            host,
            message: "it runs without TLS (rolled out before pgstrap turned TLS on): it is kept that way".into(),
            hint: "moving a running cluster to TLS in place is not automated yet; set `tls: {enabled: false}` in the inventory to say so and silence this".into(),
            warning: true,
        }),
        _ if value.as_bool() == Some(true) => Some(Problem {
            host,
            message: "the inventory sets tls.enabled, but the running cluster's etcd speaks plain HTTP".into(),
            hint: "switching etcd's peer URLs to TLS under a running cluster is not automated: set `tls: {enabled: false}` for it (or rebuild it)".into(),
            warning: false,
        }),
        _ => None,
    }
}

/// Run the preflight script on a connected host and judge it.
pub async fn check_host(session: &Session, state: &HostState) -> Vec<Problem> {
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let sent = now();
    match session
        .run(&RemoteCommand::stdin_script(script(), "preflight checks"))
        .await
    {
        Ok(output) => judge(
            state,
            &parse(&output.stdout_text()),
            sent,
            now(),
            2 * 1024 * 1024,
        ),
        Err(e) => vec![Problem {
            host: state.host.clone(),
            message: format!("preflight script failed: {e}"),
            hint: "run it by hand with `ssh HOST sh -s < …` to see why".into(),
            warning: false,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RoleState;

    /// Captured from a lab host (Debian 12 in systemd-nspawn) running etcd and sshd (its
    /// os-release trimmed to the lines read).
    const CAPTURED: &str = "@@pgstrap os\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n@@pgstrap container\nsystemd-nspawn\n@@pgstrap preflight\ndisk_kb=52428800\nclock=1763791234.123456789\nresolves=yes\nlisten=0.0.0.0:22 users:((\"sshd\",pid=61,fd=3))\nlisten=10.77.0.11:2379 users:((\"etcd\",pid=90,fd=7))\nlisten=127.0.0.1:2379 users:((\"etcd\",pid=90,fd=6))\nlisten=[::]:22 users:((\"sshd\",pid=61,fd=4))\n";

    fn host(role: &str, ports: &[(&str, u64)]) -> HostState {
        HostState {
            host: "n1".into(),
            address: "10.77.0.11".into(),
            roles: vec![RoleState {
                role: role.into(),
                cluster: Some("main".into()),
                phase: 20,
                packages: vec![],
                directories: vec![],
                files: vec![],
                sysctls: vec![],
                services: vec![],
                handlers: vec![],
                checks: vec![],
                ports: ports.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
                before_packages: vec![],
            }],
        }
    }

    #[test]
    fn parses_captured_output() {
        let facts = parse(CAPTURED);
        assert_eq!(facts.os, "debian 12");
        assert_eq!(facts.container.as_deref(), Some("systemd-nspawn"));
        assert_eq!(facts.disk_free_kb, Some(52_428_800));
        assert!(facts.hostname_resolves);
        assert_eq!(facts.listening.get(&2379).map(String::as_str), Some("etcd"));
        assert_eq!(facts.listening.get(&22).map(String::as_str), Some("sshd"));
    }

    #[test]
    fn a_port_held_by_its_own_service_is_fine_by_another_is_not() {
        let facts = parse(CAPTURED);
        let at = facts.clock.unwrap();
        assert!(judge(&host("etcd", &[("client", 2379)]), &facts, at, at, 1).is_empty());
        let problems = judge(&host("haproxy", &[("write", 22)]), &facts, at, at, 1);
        assert_eq!(problems.len(), 1);
        assert!(problems[0]
            .message
            .contains("port 22 (haproxy write) is already in use by `sshd`"));
    }

    #[test]
    fn wrong_os_low_disk_and_clock_skew_are_reported() {
        let mut facts = parse(CAPTURED);
        facts.os = "ubuntu 22.04".into();
        facts.disk_free_kb = Some(1024);
        let at = facts.clock.unwrap();
        let problems = judge(
            &host("etcd", &[]),
            &facts,
            at + 10.0,
            at + 10.1,
            2 * 1024 * 1024,
        );
        let text: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 3, "{text:?}");
    }
}
