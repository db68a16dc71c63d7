//! Every cross-check on the inventory. Each problem becomes one diagnostic at its place in the
//! file; all of them are reported together, and any error stops the run before a host is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};

use super::diag::{InventoryError, Source};
use super::raw::{self, RawCluster, RawInventory, RawValue, RawVars};
use super::secrets::{self, SecretSource};
use super::{Apt, Cluster, Host, Inventory, Ssh};
use crate::error::{Error, Result};
use crate::settings::types::{self, Lookup, Problem, Schema, SettingType, Step};
use crate::settings::vars::{self, Layer, Origin};

struct Checker<'a> {
    source: &'a Source,
    errors: Vec<InventoryError>,
    warnings: Vec<InventoryError>,
}

impl Checker<'_> {
    fn error(&mut self, at: Location, message: String, label: &str, hint: Option<String>) {
        let mut e = InventoryError::at(self.source, Some(at), message, label);
        if let Some(h) = hint {
            e = e.hint(h);
        }
        self.errors.push(e);
    }

    /// An error whose line is not shown (it holds a secret); the message must not hold it either.
    fn error_hiding_line(&mut self, at: Location, message: String, hint: String) {
        let e = InventoryError::at(self.source, Some(at), message, "")
            .without_snippet()
            .hint(hint);
        self.errors.push(e);
    }

    fn warn(&mut self, at: Location, message: String, label: &str, hint: Option<String>) {
        let mut e = InventoryError::at(self.source, Some(at), message, label).warning();
        if let Some(h) = hint {
            e = e.hint(h);
        }
        self.warnings.push(e);
    }
}

pub(super) fn validate(
    raw: RawInventory,
    source: Source,
    path: PathBuf,
    dir: PathBuf,
    schema: &Schema,
) -> Result<Inventory> {
    let mut c = Checker {
        source: &source,
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    check_ssh(&mut c, &raw.ssh);
    let hosts = check_hosts(&mut c, &raw, schema);
    let known: Vec<&str> = raw.hosts.keys().map(String::as_str).collect();
    // The hosts in no cluster's etcd, postgres or balancers (e.g. application servers named in
    // the inventory): every cluster's default `networks` lets them in (built once).
    let in_a_cluster: std::collections::BTreeSet<&str> = raw
        .clusters
        .values()
        .flat_map(|c| {
            let c = &c.value;
            c.etcd.iter().chain(&c.postgres).chain(&c.balancers)
        })
        .map(|h| h.value.as_str())
        .collect();
    let unassigned: Vec<&Host> = hosts
        .values()
        .filter(|h| !in_a_cluster.contains(h.name.as_str()))
        .collect();
    let by_address: BTreeMap<IpAddr, &str> = hosts
        .values()
        .map(|h| (h.address, h.name.as_str()))
        .collect();
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &raw.clusters {
        let context = ClusterContext {
            hosts: &hosts,
            known: &known,
            unassigned: &unassigned,
            by_address: &by_address,
            schema,
        };
        if let Some(model) = check_cluster(&mut c, name, cluster, &context) {
            clusters.insert(name.clone(), model);
        }
    }
    check_across_clusters(&mut c, &raw, &clusters);
    check_standby_links(&mut c, &raw);
    check_restore_links(&mut c, &raw);
    let secret_sources = check_secrets(&mut c, &raw, &dir);
    let apt = check_apt(&mut c, &raw);

    if !c.errors.is_empty() {
        let mut reports: Vec<miette::Report> = c.errors.into_iter().map(Into::into).collect();
        reports.extend(c.warnings.into_iter().map(Into::into));
        return Err(Error {
            kind: crate::error::ErrorKind::BadInput,
            reports,
        });
    }

    let ssh = raw.ssh;
    let user = ssh.user.map_or_else(|| "root".into(), |u| u.value);
    let become_root = ssh.become_root.unwrap_or(user != "root");
    let templates_dir =
        super::resolve_path(&dir, raw.templates_dir.as_deref().unwrap_or("templates"));
    Ok(Inventory {
        ssh: Ssh {
            port: ssh.port.map_or(22, |p| p.value),
            identity_file: ssh
                .identity_file
                .map(|p| super::resolve_path(&dir, &p.value)),
            known_hosts: ssh.known_hosts.map(|p| super::resolve_path(&dir, &p.value)),
            become_root,
            connect_timeout: ssh.connect_timeout.map_or(10, |t| t.value),
            options: ssh.options.into_iter().map(|(k, v)| (k, v.value)).collect(),
            user,
        },
        apt,
        templates_dir,
        hosts,
        clusters,
        secret_sources,
        warnings: c.warnings,
        source_name: source.name.clone(),
        source,
        path,
        dir,
    })
}

/// `ssh:` values go into `ssh`'s argument list and `-o` options: none may start an option of
/// its own (`-oProxyCommand=…` as a user name), split a line, or be out of range. Refused here,
/// with their place, not at the first connect.
fn check_ssh(c: &mut Checker, ssh: &super::raw::RawSsh) {
    let plain =
        |s: &str| !s.is_empty() && !s.starts_with('-') && !s.chars().any(crate::text::breaks_line);
    if let Some(user) = &ssh.user {
        let ok = plain(&user.value)
            && user
                .value
                .chars()
                .all(|ch| ch.is_alphanumeric() || "._-@\\".contains(ch));
        if !ok {
            c.error(
                user.referenced,
                "ssh.user is not a user name".into(),
                "this value",
                Some("letters, digits, `.`, `_`, `-` (not first), `@` and `\\` only: it is given to ssh as `-l USER`".into()),
            );
        }
    }
    if let Some(port) = &ssh.port {
        if port.value == 0 {
            c.error(
                port.referenced,
                "ssh.port 0 is not a port".into(),
                "this value",
                Some("1 to 65535 (22 by default)".into()),
            );
        }
    }
    for (key, path) in [
        ("identity_file", &ssh.identity_file),
        ("known_hosts", &ssh.known_hosts),
    ] {
        if let Some(path) = path {
            if !plain(&path.value) {
                c.error(
                    path.referenced,
                    format!("ssh.{key} is not a usable path"),
                    "this value",
                    Some(
                        "a path on this machine, not empty, not starting with `-`, on one line"
                            .into(),
                    ),
                );
            }
        }
    }
    if let Some(timeout) = &ssh.connect_timeout {
        if !(1..=3600).contains(&timeout.value) {
            c.error(
                timeout.referenced,
                format!("ssh.connect_timeout {} is out of range", timeout.value),
                "this value",
                Some("seconds, 1 to 3600 (10 by default)".into()),
            );
        }
    }
    for (key, value) in &ssh.options {
        let key_ok = !key.is_empty() && key.chars().all(|ch| ch.is_ascii_alphanumeric());
        if !key_ok || value.value.is_empty() || value.value.chars().any(crate::text::breaks_line) {
            c.error(
                value.referenced,
                format!("ssh.options: `{}` is not an ssh option with a value", key.escape_debug()),
                "this option",
                Some("an option name of letters and digits (as in ssh_config, e.g. ProxyJump) and a non-empty value on one line".into()),
            );
        }
    }
}

fn check_hosts(c: &mut Checker, raw: &RawInventory, schema: &Schema) -> BTreeMap<String, Host> {
    let mut hosts = BTreeMap::new();
    let mut by_address: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (name, spanned) in &raw.hosts {
        let host = &spanned.value;
        if !valid_name(name) {
            c.error(
                spanned.referenced,
                format!("host name `{name}` is not a valid name"),
                "this host",
                Some("use letters, digits, `-` and `_` (it becomes a hostname and a Patroni member name)".into()),
            );
        }
        let address = match host.address.value.parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.error(
                    host.address.referenced,
                    format!("host `{name}`: `{}` is not an IP address", host.address.value),
                    "not an IP address",
                    Some("write the address pgstrap connects to, e.g. 10.0.0.11 (names are not resolved)".into()),
                );
                continue;
            }
        };
        if address.is_ipv6() {
            c.error(
                host.address.referenced,
                format!(
                    "host `{name}`: `{address}` is an IPv6 address; pgstrap supports IPv4 only"
                ),
                "IPv6",
                Some(IPV6_HINT.into()),
            );
            continue;
        }
        if address.is_unspecified()
            || address.is_multicast()
            || address == IpAddr::from([255, 255, 255, 255])
        {
            c.error(
                host.address.referenced,
                format!("host `{name}`: `{address}` is not a host's address"),
                "not a host address",
                Some("0.0.0.0, multicast and broadcast addresses name no single host: write the address pgstrap connects to".into()),
            );
            continue;
        }
        if let Some(datacenter) = &host.datacenter {
            check_name(c, datacenter, &format!("host `{name}`: datacenter"));
        }
        if let Some(other) = by_address.insert(address, name) {
            c.error(
                host.address.referenced,
                format!("hosts `{other}` and `{name}` have the same address {address}"),
                "duplicate address",
                Some("every host needs its own address".into()),
            );
        }
        check_settings(c, schema, &format!("host `{name}`"), "", &host.vars);
        let vars_layer =
            Layer::from_nested(Origin::Host(name.clone()), &raw::vars_to_json(&host.vars));
        hosts.insert(
            name.clone(),
            Host {
                name: name.clone(),
                address,
                datacenter: host
                    .datacenter
                    .as_ref()
                    .map_or_else(|| "dc1".to_owned(), |d| d.value.clone()),
                ssh_port: host.ssh_port,
                vars: vars_layer,
                setting_locations: setting_locations(&[("", &host.vars)]),
                location: spanned.referenced,
            },
        );
    }
    hosts
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        && name
            .chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphanumeric())
}

/// IPv6 is refused, not rendered wrong.
const IPV6_HINT: &str = "IPv6 is refused at check rather than rendered wrong: the templates write URLs and `address:port` without brackets and /32 host networks; give the IPv4 address";

fn check_name(c: &mut Checker, value: &Spanned<String>, what: &str) {
    if !types::is_name(&value.value) {
        c.error(
            value.referenced,
            format!(
                "{what} `{}` is not a valid name",
                types::shown(&value.value)
            ),
            "not a name",
            Some(
                "use letters, digits, `-` and `_` (it is written into configuration files)".into(),
            ),
        );
    }
}

/// Check every setting in `vars` (written below `prefix`: `patroni` for a cluster's `patroni:`
/// shorthand, nothing for `vars:`) against the type declared beside its default.
fn check_settings(c: &mut Checker, schema: &Schema, whose: &str, prefix: &str, vars: &RawVars) {
    for (key, node) in vars {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        check_setting(c, schema, whose, &path, node);
    }
}

fn check_setting(
    c: &mut Checker,
    schema: &Schema,
    whose: &str,
    path: &str,
    node: &Spanned<RawValue>,
) {
    // A group (`patroni`) or a mapping setting (`postgresql.parameters`) written as a mapping:
    // each key below it is a setting of its own.
    let descend = matches!(
        schema.lookup(path),
        Lookup::Group | Lookup::Setting(SettingType::Map(_))
    );
    if let (true, RawValue::Map(map)) = (descend, &node.value) {
        if !map.is_empty() {
            for (key, child) in map {
                check_setting(c, schema, whose, &format!("{path}.{key}"), child);
            }
            return;
        }
    }
    let value = node.value.to_json();
    if let Err(problem) = schema.check(path, &value) {
        let (message, hint) = problem.describe(path, &value);
        let (at, label) = match &problem {
            Problem::Value(mismatch) => (locate(node, &mismatch.at), "this value"),
            _ => (node.referenced, "set here"),
        };
        c.error(at, format!("{whose}: {message}"), label, Some(hint));
    }
}

/// Where each setting (dotted key, as [`Layer::from_nested`] flattens them) is written.
fn setting_locations(groups: &[(&str, &RawVars)]) -> BTreeMap<String, Location> {
    fn walk(path: String, node: &Spanned<RawValue>, out: &mut BTreeMap<String, Location>) {
        match &node.value {
            RawValue::Map(map) if !map.is_empty() => {
                for (key, child) in map {
                    walk(format!("{path}.{key}"), child, out);
                }
            }
            _ => {
                out.insert(path, node.referenced);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (prefix, vars) in groups {
        for (key, node) in *vars {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            walk(path, node, &mut out);
        }
    }
    out
}

/// The location of the part of `node` that `steps` lead to (as far as they go).
fn locate(node: &Spanned<RawValue>, steps: &[Step]) -> Location {
    let mut node = node;
    for step in steps {
        let next = match (step, &node.value) {
            (Step::Index(i), RawValue::List(items)) => items.get(*i),
            (Step::Key(k), RawValue::Map(map)) => map.get(k),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node.referenced
}

/// The most PostgreSQL members of one cluster (see the error that refuses more).
const MAX_POSTGRES_MEMBERS: usize = 100;

/// What every cluster's checks share.
struct ClusterContext<'a> {
    hosts: &'a BTreeMap<String, Host>,
    known: &'a [&'a str],
    /// Hosts in no cluster (their /32s are in every cluster's default `networks`).
    unassigned: &'a [&'a Host],
    by_address: &'a BTreeMap<IpAddr, &'a str>,
    schema: &'a Schema,
}

/// Check one cluster as written, reporting every problem; the cluster when its hosts are known.
fn check_cluster(
    c: &mut Checker,
    name: &str,
    spanned: &Spanned<RawCluster>,
    context: &ClusterContext,
) -> Option<Cluster> {
    let raw = &spanned.value;
    let at = spanned.referenced;
    if !valid_name(name) {
        c.error(
            at,
            format!("cluster name `{name}` is not a valid name"),
            "this cluster",
            Some("use letters, digits, `-` and `_` (it becomes the Patroni scope)".into()),
        );
    }
    let mut ok = true;
    let etcd = cluster_hosts(c, name, &raw.etcd, "etcd", context, &mut ok);
    let postgres = cluster_hosts(c, name, &raw.postgres, "postgres", context, &mut ok);
    let balancers = cluster_hosts(c, name, &raw.balancers, "balancers", context, &mut ok);
    let (repository, backup_settings) = split_backup(c, name, raw.backup.as_ref());
    let backup = cluster_hosts(c, name, &repository, "backup.repository", context, &mut ok);
    check_backup(c, name, raw, &repository, &backup, &postgres);
    check_member_counts(c, name, spanned, &postgres);
    let datacenter = cluster_datacenter(c, name, raw, &postgres, context.hosts);
    let networks = cluster_networks(c, name, raw, context);
    let vip = raw
        .vip
        .as_ref()
        .and_then(|v| check_vip(c, name, v, context, &balancers));
    let vars_layer = cluster_settings(c, name, raw, context.schema, &backup_settings);

    ok.then(|| Cluster {
        name: name.to_owned(),
        datacenter,
        etcd,
        postgres,
        balancers,
        backup,
        vip,
        networks,
        vars: vars_layer,
        setting_locations: setting_locations(&[
            ("", &raw.vars),
            ("postgresql.parameters", &raw.postgres_parameters),
            ("patroni", &raw.patroni),
            ("pgbackrest", &backup_settings),
        ]),
        standby_of: raw.standby_of.as_ref().map(|s| s.value.clone()),
        restore_of: raw.restore_of.as_ref().map(|s| s.value.clone()),
        location: at,
    })
}

/// The hosts of one of the cluster's lists (`what`), each defined and listed once; an unknown
/// host clears `ok` (a listed-twice one is only reported).
fn cluster_hosts(
    c: &mut Checker,
    name: &str,
    list: &[Spanned<String>],
    what: &str,
    context: &ClusterContext,
    ok: &mut bool,
) -> Vec<String> {
    let (hosts, known) = (context.hosts, context.known);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for item in list {
        if !hosts.contains_key(&item.value) && !known.contains(&item.value.as_str()) {
            let hint = match closest_name(known, &item.value) {
                Some(near) => {
                    format!("did you mean `{near}`? hosts are defined under `hosts:`")
                }
                None => format!(
                    "define `{}` under `hosts:`; known hosts: {}",
                    item.value,
                    known.join(", ")
                ),
            };
            c.error(
                item.referenced,
                format!(
                    "cluster `{name}`: unknown host `{}` in `{what}`",
                    item.value
                ),
                "not defined under `hosts:`",
                Some(hint),
            );
            *ok = false;
        } else if !seen.insert(item.value.clone()) {
            c.error(
                item.referenced,
                format!(
                    "cluster `{name}`: host `{}` is listed twice in `{what}`",
                    item.value
                ),
                "listed again",
                Some("list each host once".into()),
            );
        } else {
            out.push(item.value.clone());
        }
    }
    out
}

/// Check how many PostgreSQL and etcd members the cluster has.
fn check_member_counts(
    c: &mut Checker,
    name: &str,
    spanned: &Spanned<RawCluster>,
    postgres: &[String],
) {
    let raw = &spanned.value;
    let at = spanned.referenced;
    if raw.postgres.len() > MAX_POSTGRES_MEMBERS {
        c.error(
            raw.postgres.first().map_or(at, |p| p.referenced),
            format!(
                "cluster `{name}` has {} PostgreSQL members; pgstrap builds clusters of at most {MAX_POSTGRES_MEMBERS}",
                raw.postgres.len()
            ),
            "these members",
            Some(format!(
                "every member's pg_hba, Patroni and HAProxy configuration lists every other member \
                 (work and output grow with the square of the count), the primary runs one WAL \
                 sender per replica, and every member polls etcd each loop: split it into \
                 clusters of at most {MAX_POSTGRES_MEMBERS} (read scaling: more clusters or \
                 cascading replicas outside pgstrap)"
            )),
        );
    }
    if postgres.is_empty() {
        c.error(
            at,
            format!("cluster `{name}` has no `postgres` hosts"),
            "this cluster",
            Some("list the Patroni members, e.g. `postgres: [pg1, pg2, pg3]`".into()),
        );
    }
    // Count what was written (an unknown host is reported on its own, not as a wrong count).
    match raw.etcd.len() {
        0 => c.error(
            at,
            format!("cluster `{name}` has no `etcd` hosts"),
            "this cluster",
            Some("Patroni needs a DCS: list 3 (or 5) etcd members, e.g. `etcd: [pg1, pg2, pg3]`".into()),
        ),
        1 => c.warn(
            at,
            format!("cluster `{name}` has a single etcd member: losing it stops every failover"),
            "one etcd member",
            Some("use 3 etcd members for a cluster that survives one failure".into()),
        ),
        n if n % 2 == 0 && !raw.allow_even_etcd => c.error(
            raw.etcd.first().map_or(at, |e| e.referenced),
            format!(
                "cluster `{name}` has {n} etcd members: an even count tolerates no more failures than {} and splits votes",
                n - 1
            ),
            "even member count",
            Some(format!(
                "use {} or {} members, or set `allow_even_etcd: true` on the cluster if this is deliberate (e.g. during a migration)",
                n - 1,
                n + 1
            )),
        ),
        _ => {}
    }
}

/// The cluster's datacenter (checked): the one written, else its first PostgreSQL host's.
fn cluster_datacenter(
    c: &mut Checker,
    name: &str,
    raw: &RawCluster,
    postgres: &[String],
    hosts: &BTreeMap<String, Host>,
) -> String {
    if let Some(datacenter) = &raw.datacenter {
        check_name(c, datacenter, &format!("cluster `{name}`: datacenter"));
    }
    raw.datacenter
        .as_ref()
        .map(|d| d.value.clone())
        .unwrap_or_else(|| {
            postgres
                .first()
                .and_then(|h| hosts.get(h))
                .map_or_else(|| "dc1".to_owned(), |h| h.datacenter.clone())
        })
}

/// The cluster's networks: the inventory's (checked), or the /32s of this cluster's own hosts and
/// of the hosts in no cluster (linear in the inventory: every host of every cluster in every
/// pg_hba was 869 MB of output at 3000 hosts). The DR pair's hosts replicate through the peers'
/// lines.
fn cluster_networks(
    c: &mut Checker,
    name: &str,
    raw: &RawCluster,
    context: &ClusterContext,
) -> Vec<IpNet> {
    match &raw.networks {
        Some(list) => list
            .iter()
            .filter_map(|n| match n.value.parse::<IpNet>() {
                Ok(IpNet::V6(_)) => {
                    c.error(
                        n.referenced,
                        format!(
                            "cluster `{name}`: `{}` is an IPv6 network; pgstrap supports IPv4 only",
                            n.value
                        ),
                        "IPv6",
                        Some(IPV6_HINT.into()),
                    );
                    None
                }
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    c.error(
                        n.referenced,
                        format!("cluster `{name}`: `{}` is not a network", n.value),
                        "not a CIDR",
                        Some("write networks in CIDR form, e.g. 10.0.0.0/24".into()),
                    );
                    None
                }
            })
            .collect(),
        None => {
            let own = raw
                .etcd
                .iter()
                .chain(&raw.postgres)
                .chain(&raw.balancers)
                .filter_map(|h| context.hosts.get(&h.value));
            // In the hosts' order (by name), as before.
            let mut own: Vec<&Host> = context.unassigned.iter().copied().chain(own).collect();
            own.sort_by(|a, b| a.name.cmp(&b.name));
            own.dedup_by(|a, b| a.name == b.name);
            own.iter().map(|h| IpNet::from(h.address)).collect()
        }
    }
}

/// Check the cluster's settings (`vars`, `postgresql.parameters`, `patroni`, and `backup`'s
/// `pgbackrest` ones) and merge them into the cluster's layer.
fn cluster_settings(
    c: &mut Checker,
    name: &str,
    raw: &RawCluster,
    schema: &Schema,
    backup_settings: &RawVars,
) -> Layer {
    let whose = format!("cluster `{name}`");
    check_settings(c, schema, &whose, "", &raw.vars);
    check_settings(
        c,
        schema,
        &whose,
        "postgresql.parameters",
        &raw.postgres_parameters,
    );
    check_settings(c, schema, &whose, "patroni", &raw.patroni);
    check_settings(c, schema, &whose, "pgbackrest", backup_settings);
    let mut settings = raw::vars_to_json(&raw.vars);
    merge_into(
        &mut settings,
        "postgresql",
        "parameters",
        &raw.postgres_parameters,
    );
    merge_into(&mut settings, "patroni", "", &raw.patroni);
    merge_into(&mut settings, "pgbackrest", "", backup_settings);
    Layer::from_nested(Origin::Cluster(name.to_owned()), &settings)
}

/// `backup:` as written: the repository host list (each name with its place) and the rest, which
/// are `pgbackrest.*` settings.
fn split_backup(
    c: &mut Checker,
    name: &str,
    backup: Option<&Spanned<RawVars>>,
) -> (Vec<Spanned<String>>, RawVars) {
    let Some(backup) = backup else {
        return (Vec::new(), RawVars::new());
    };
    let mut settings = backup.value.clone();
    let mut repository = Vec::new();
    match settings.remove("repository") {
        None => c.error(
            backup.referenced,
            format!("cluster `{name}`: `backup` names no `repository`"),
            "no repository",
            Some("name the pgBackRest repository host, e.g. `backup: {repository: [backup1]}` (a host of its own, or a balancer)".into()),
        ),
        Some(node) => {
            let items = match node.value {
                RawValue::List(items) => items,
                RawValue::Scalar(_) => vec![node],
                RawValue::Map(_) => {
                    c.error(
                        node.referenced,
                        format!("cluster `{name}`: `backup.repository` is a mapping"),
                        "not a host list",
                        Some("write the repository host as a list, e.g. `repository: [backup1]`".into()),
                    );
                    Vec::new()
                }
            };
            for item in items {
                match &item.value {
                    RawValue::Scalar(Value::String(host)) => repository.push(Spanned::new(
                        host.clone(),
                        item.referenced,
                        item.defined,
                    )),
                    _ => c.error(
                        item.referenced,
                        format!("cluster `{name}`: `backup.repository` lists something that is not a host name"),
                        "not a host name",
                        Some("list host names defined under `hosts:`".into()),
                    ),
                }
            }
        }
    }
    (repository, settings)
}

/// What a `backup:` section must be: one repository host (pgBackRest's repository is one
/// directory on one host here), TLS on (its hosts talk through pgBackRest's TLS server), not on
/// a standby cluster (a DR pair's backups are its primary side's), and a warning when the
/// repository sits on one of the cluster's own DB hosts (lost with it).
fn check_backup(
    c: &mut Checker,
    name: &str,
    raw: &RawCluster,
    written: &[Spanned<String>],
    repository: &[String],
    postgres: &[String],
) {
    let Some(backup) = &raw.backup else {
        return;
    };
    if written.is_empty() && backup.value.contains_key("repository") {
        c.error(
            backup.referenced,
            format!("cluster `{name}`: `backup.repository` is empty"),
            "no repository",
            Some("name the pgBackRest repository host, e.g. `repository: [backup1]`".into()),
        );
    }
    if let Some(second) = written.get(1) {
        c.error(
            second.referenced,
            format!("cluster `{name}`: `backup.repository` lists {} hosts; pgstrap supports one repository host per cluster", written.len()),
            "a second repository",
            Some("keep one repository host (a second copy of the repository is not supported yet)".into()),
        );
    }
    if let Some(standby) = &raw.standby_of {
        c.error(
            backup.referenced,
            format!(
                "cluster `{name}` is a standby of `{}` and has its own `backup`",
                standby.value
            ),
            "on a standby cluster",
            Some(format!(
                "a DR pair is backed up on its primary side: move `backup:` to cluster `{}`",
                standby.value
            )),
        );
    }
    for (host, item) in repository.iter().zip(written) {
        if postgres.contains(host) {
            c.warn(
                item.referenced,
                format!("cluster `{name}`: the backup repository `{host}` is one of the cluster's own DB hosts: losing that host loses the backups too"),
                "a DB host of this cluster",
                Some("put the repository on a host of its own, or on a balancer".into()),
            );
        }
    }
}

/// Put `values` under `settings[role][sub]` (or `settings[role]` when `sub` is empty).
fn merge_into(settings: &mut Map<String, Value>, role: &str, sub: &str, values: &RawVars) {
    if values.is_empty() {
        return;
    }
    let role_map = settings
        .entry(role.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(role_map) = role_map else {
        return;
    };
    let target = if sub.is_empty() {
        role_map
    } else {
        let sub_map = role_map
            .entry(sub.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        match sub_map {
            Value::Object(m) => m,
            _ => return,
        }
    };
    for (k, v) in values {
        target.insert(k.clone(), v.value.to_json());
    }
}

fn check_vip(
    c: &mut Checker,
    name: &str,
    vip: &Spanned<String>,
    context: &ClusterContext,
    balancers: &[String],
) -> Option<IpNet> {
    let hosts = context.hosts;
    let Ok(net) = vip.value.parse::<IpNet>() else {
        c.error(
            vip.referenced,
            format!(
                "cluster `{name}`: VIP `{}` is not an address with a prefix",
                vip.value
            ),
            "expected e.g. 10.0.0.100/24",
            Some(
                "write the VIP with the prefix of the balancers' network, e.g. 10.0.0.100/24"
                    .into(),
            ),
        );
        return None;
    };
    if net.addr().is_ipv6() {
        c.error(
            vip.referenced,
            format!("cluster `{name}`: VIP `{net}` is IPv6; pgstrap supports IPv4 only"),
            "IPv6",
            Some(IPV6_HINT.into()),
        );
        return None;
    }
    // A VIP is one host address inside a real network: not /0 or /31–/32 (no neighbour can take
    // it over), not the network's own or its broadcast address, not 0.0.0.0 or multicast.
    let (addr, prefix) = (net.addr(), net.prefix_len());
    let problem = if addr.is_unspecified() || addr.is_multicast() {
        Some("0.0.0.0 or a multicast address is no VIP")
    } else if prefix == 0 || prefix >= 31 {
        Some("its prefix must be that of the balancers' network (1–30), e.g. /24")
    } else if addr == net.network() {
        Some("it is the network's own address")
    } else if addr == net.broadcast() {
        Some("it is the network's broadcast address")
    } else {
        None
    };
    if let Some(problem) = problem {
        c.error(
            vip.referenced,
            format!("cluster `{name}`: VIP `{net}`: {problem}"),
            "this VIP",
            Some("a free host address in the balancers' network, with the network's prefix, e.g. 10.0.0.100/24".into()),
        );
        return None;
    }
    if balancers.is_empty() {
        c.error(
            vip.referenced,
            format!("cluster `{name}` has a VIP but no `balancers`"),
            "nothing would hold this VIP",
            Some(
                "list the HAProxy + keepalived hosts under `balancers:` (they may be the DB hosts)"
                    .into(),
            ),
        );
    }
    if let Some(owner) = context.by_address.get(&net.addr()) {
        c.error(
            vip.referenced,
            format!(
                "cluster `{name}`: VIP {} is the address of host `{owner}`",
                net.addr(),
            ),
            "already a host address",
            Some("pick a free address in the balancers' network for the VIP".into()),
        );
    } else {
        let outside: Vec<&str> = balancers
            .iter()
            .filter_map(|b| hosts.get(b))
            .filter(|h| !net.trunc().contains(&h.address))
            .map(|h| h.name.as_str())
            .collect();
        if !outside.is_empty()
            || (balancers.is_empty() && !hosts.values().any(|h| net.trunc().contains(&h.address)))
        {
            c.error(
                vip.referenced,
                format!(
                    "cluster `{name}`: VIP {} is outside the network of {}",
                    net,
                    if outside.is_empty() { "every host".to_owned() } else { format!("balancer(s) {}", outside.join(", ")) }
                ),
                "not reachable on the balancers' segment",
                Some("a VIP moves between hosts on one L2 segment: choose an address in the balancers' network, with its prefix".into()),
            );
        }
    }
    Some(net)
}

fn check_across_clusters(
    c: &mut Checker,
    raw: &RawInventory,
    clusters: &BTreeMap<String, Cluster>,
) {
    // A host may run one Patroni member only.
    let mut patroni_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, cluster) in &raw.clusters {
        for item in &cluster.value.postgres {
            if let Some(other) = patroni_owner.insert(item.value.as_str(), name.as_str()) {
                if other != name {
                    c.error(
                        item.referenced,
                        format!(
                            "host `{}` would run two Patroni members (clusters `{other}` and `{name}`)",
                            item.value
                        ),
                        "second Patroni member on this host",
                        Some("a host runs one PostgreSQL instance under Patroni: use another host".into()),
                    );
                }
            }
        }
    }
    // VIPs unique.
    let mut vips: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for cluster in clusters.values() {
        if let Some(vip) = cluster.vip {
            if let Some(other) = vips.insert(vip.addr(), &cluster.name) {
                c.error(
                    cluster.location,
                    format!(
                        "clusters `{other}` and `{}` use the same VIP {}",
                        cluster.name,
                        vip.addr()
                    ),
                    "this cluster",
                    Some("give each cluster its own VIP".into()),
                );
            }
        }
    }
}

/// `restore_of` names another primary cluster of this inventory that has backups; the restored
/// cluster is a primary of its own (no `standby_of`) without backups of its own yet (its
/// pgBackRest configuration is the source's repository until it is restored).
fn check_restore_links(c: &mut Checker, raw: &RawInventory) {
    for (name, cluster) in &raw.clusters {
        let Some(source) = &cluster.value.restore_of else {
            continue;
        };
        let hint = |m: &str| Some(m.to_owned());
        if &source.value == name {
            c.error(
                source.referenced,
                format!("cluster `{name}` is restored from itself"),
                "its own name",
                hint("`restore_of` names the cluster whose backups this one is created from (an in-place restore is `pgstrap restore --cluster NAME --in-place`)"),
            );
            continue;
        }
        let Some(origin) = raw.clusters.get(&source.value) else {
            let names: Vec<&str> = raw.clusters.keys().map(String::as_str).collect();
            c.error(
                source.referenced,
                format!(
                    "cluster `{name}`: `restore_of` names unknown cluster `{}`",
                    source.value
                ),
                "no such cluster",
                Some(format!("clusters defined here: {}", names.join(", "))),
            );
            continue;
        };
        if origin.value.backup.is_none() {
            c.error(
                source.referenced,
                format!(
                    "cluster `{name}`: `restore_of` names cluster `{}`, which has no backups",
                    source.value
                ),
                "no backup: section there",
                hint("give that cluster `backup: {repository: [HOST]}` first"),
            );
        }
        if cluster.value.standby_of.is_some() || cluster.value.backup.is_some() {
            c.error(
                source.referenced,
                format!("cluster `{name}`: a restored cluster has neither `standby_of` nor `backup` of its own while it is a restore target"),
                "restore target",
                hint("restore first; then remove `restore_of` and add what the new cluster needs"),
            );
        }
        if origin.value.restore_of.is_some() {
            c.error(
                source.referenced,
                format!(
                    "cluster `{name}`: `restore_of` names `{}`, itself a restore target",
                    source.value
                ),
                "a restore target",
                hint("restore from the cluster whose backups these are"),
            );
        }
    }
}

fn check_standby_links(c: &mut Checker, raw: &RawInventory) {
    // Each standby cluster gets a replication slot on its primary side, named after it: two
    // standbys of one primary must not share a slot (`DR` and `dr` both make `standby_dr`), and
    // the name must fit PostgreSQL's 63 bytes.
    let mut slots: BTreeMap<(&str, String), &str> = BTreeMap::new();
    for (name, cluster) in &raw.clusters {
        let Some(target) = &cluster.value.standby_of else {
            continue;
        };
        let slot = crate::inventory::standby_slot(name);
        if slot.len() > 63 {
            c.error(
                target.referenced,
                format!("cluster `{name}`: its replication slot `{slot}` would be longer than PostgreSQL's 63 characters"),
                "standby cluster",
                Some("give the standby cluster a shorter name (at most 55 characters)".into()),
            );
        }
        if let Some(other) = slots.insert((target.value.as_str(), slot.clone()), name) {
            c.error(
                target.referenced,
                format!(
                    "clusters `{other}` and `{name}` are both standbys of `{}` and would use the same replication slot `{slot}`",
                    target.value
                ),
                "same slot as another standby",
                Some("slot names are the standby cluster's name in lowercase with other characters as `_`: rename one of the clusters".into()),
            );
        }
    }
    for (name, cluster) in &raw.clusters {
        let Some(target) = &cluster.value.standby_of else {
            continue;
        };
        if &target.value == name {
            c.error(
                target.referenced,
                format!("cluster `{name}` is a standby of itself"),
                "points at its own cluster",
                Some("`standby_of` names the primary-side cluster in the other datacenter".into()),
            );
            continue;
        }
        if !raw.clusters.contains_key(&target.value) {
            let names: Vec<&str> = raw.clusters.keys().map(String::as_str).collect();
            c.error(
                target.referenced,
                format!(
                    "cluster `{name}`: `standby_of` names unknown cluster `{}`",
                    target.value
                ),
                "no such cluster",
                Some(format!("clusters defined here: {}", names.join(", "))),
            );
            continue;
        }
        // Follow the chain; coming back to `name` is a cycle.
        let mut seen = vec![name.as_str()];
        let mut next = Some(target.value.as_str());
        while let Some(current) = next {
            if current == name {
                c.error(
                    target.referenced,
                    format!(
                        "clusters form a standby cycle: {} → {name}",
                        seen.join(" → ")
                    ),
                    "cycle",
                    Some(
                        "exactly one cluster in a chain must be the primary side (no `standby_of`)"
                            .into(),
                    ),
                );
                break;
            }
            if seen.contains(&current) {
                break;
            }
            seen.push(current);
            next = raw
                .clusters
                .get(current)
                .and_then(|cl| cl.value.standby_of.as_ref())
                .map(|s| s.value.as_str());
        }
    }
}

fn check_secrets(
    c: &mut Checker,
    raw: &RawInventory,
    dir: &std::path::Path,
) -> BTreeMap<String, SecretSource> {
    let mut sources = BTreeMap::new();
    let known: Vec<&str> = secrets::KNOWN.iter().map(|(n, _, _)| *n).collect();
    for (name, spanned) in &raw.secrets {
        let secret = &spanned.value;
        if !known.contains(&name.as_str()) {
            let hint = match closest_name(&known, name) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("known secrets: {}", known.join(", ")),
            };
            c.error(
                spanned.referenced,
                format!("unknown secret `{name}`"),
                "not a secret pgstrap uses",
                Some(hint),
            );
            continue;
        }
        let given = [
            secret.env.is_some(),
            secret.file.is_some(),
            secret.generate == Some(true),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given == 0 {
            c.error(
                spanned.referenced,
                format!("secret `{name}` has no source"),
                "no `env`, `file` or `generate`",
                Some("give one of `{env: VAR}`, `{file: path}` or `{generate: true}`, or remove the entry to have it generated".into()),
            );
            continue;
        }
        if given > 1 {
            c.error(
                spanned.referenced,
                format!("secret `{name}` has more than one source"),
                "choose one",
                Some("give exactly one of `env`, `file` or `generate`".into()),
            );
            continue;
        }
        let source = if let Some(var) = &secret.env {
            let portable = !var.is_empty()
                && !var.starts_with(|ch: char| ch.is_ascii_digit())
                && var
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !portable {
                c.error(
                    spanned.referenced,
                    format!("secret `{name}`: `{}` is not an environment variable name", var.escape_debug()),
                    "read from the environment",
                    Some("letters, digits and `_`, not starting with a digit (e.g. PG_SUPERUSER_PASSWORD)".into()),
                );
                continue;
            }
            if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                c.error(
                    spanned.referenced,
                    format!("secret `{name}`: environment variable `{var}` is not set"),
                    "read from the environment",
                    Some(format!(
                        "export {var}=… before running pgstrap, or use `generate: true`"
                    )),
                );
            }
            SecretSource::Env(var.clone())
        } else if let Some(file) = &secret.file {
            let path = super::resolve_path(dir, file);
            if !path.is_file() {
                c.error(
                    spanned.referenced,
                    format!("secret `{name}`: file `{}` does not exist", path.display()),
                    "read from a file",
                    Some("create the file (mode 0600) or use `generate: true`".into()),
                );
            }
            SecretSource::File(path)
        } else {
            SecretSource::Generated
        };
        sources.insert(name.clone(), source);
    }
    sources
}

fn check_apt(c: &mut Checker, raw: &RawInventory) -> Apt {
    if let Some(mirror) = &raw.apt.mirror {
        // Accepted and then used nowhere would be worse than refused: a site that depends on it
        // (air-gapped) would find out at the first install.
        c.error(
            mirror.referenced,
            "apt mirror: pgstrap does not rewrite the hosts' apt sources".to_string(),
            "not supported",
            Some(
                "remove `apt.mirror`: point the hosts' own apt sources at your mirror, or give \
                 `apt.proxy` (e.g. an apt-cacher-ng that reaches the mirror)"
                    .into(),
            ),
        );
    }
    let proxy = raw.apt.proxy.as_ref().and_then(|v| {
        let problem = if !(v.value.starts_with("http://") || v.value.starts_with("https://")) {
            Some((
                "is not an http(s) URL".to_string(),
                "expected http://…",
                "e.g. `proxy: http://10.0.0.1:3142`".to_string(),
            ))
        } else if let Some(bad) = v.value.chars().find(|ch| !url_character(*ch)) {
            // The URL is written between double quotes in apt.conf, where `"` ends the value and
            // `;` or a newline starts another setting.
            Some((
                format!(
                    "contains `{}`, which a URL written into apt.conf may not hold",
                    bad.escape_debug()
                ),
                "not a URL character",
                "percent-encode the character (e.g. `%22` for `\"`), or remove it".to_string(),
            ))
        } else {
            url_authority_problem(&v.value)
        };
        match problem {
            // Credentials: neither the value nor its line is shown.
            Some((what, _, hint)) if url_has_credentials(&v.value) => {
                c.error_hiding_line(
                    v.referenced,
                    format!("apt proxy {what} (the line is not shown: it holds them)"),
                    hint,
                );
                None
            }
            Some((what, label, hint)) => {
                c.error(
                    v.referenced,
                    format!("apt proxy `{}` {what}", types::shown(&v.value)),
                    label,
                    Some(hint),
                );
                None
            }
            None => Some(v.value.trim_end_matches('/').to_owned()),
        }
    });
    Apt { proxy }
}

/// What is wrong with the authority (`user@host:port`) of an http(s) URL whose characters are
/// fine: no host, a bad port, or credentials (they would be written into a file every user of
/// the host can read, and shown in plans).
/// The authority (`user@host:port`) of a URL.
fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

fn url_has_credentials(url: &str) -> bool {
    url_authority(url).contains('@')
}

fn url_authority_problem(url: &str) -> Option<(String, &'static str, String)> {
    let authority = url_authority(url);
    if url_has_credentials(url) {
        return Some((
            "holds credentials".to_string(),
            "user:password@ here",
            "use a proxy that needs no credentials (e.g. an apt-cacher-ng on the hosts' network): \
             credentials would sit in every host's /etc/apt/apt.conf.d, readable by all, and in \
             plans"
                .to_string(),
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        // [IPv6]:port
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => ("", None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Some((
            "has no host".to_string(),
            "expected http://HOST[:PORT]",
            "e.g. `proxy: http://10.0.0.1:3142`".to_string(),
        ));
    }
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Some((
                format!("has port `{port}`, which is not a port (1–65535)"),
                "the port",
                "e.g. `proxy: http://10.0.0.1:3142`".to_string(),
            ));
        }
    }
    None
}

/// The characters of a URL (RFC 3986) that may stand between double quotes in apt.conf: no `"`,
/// `;`, `#`, `{`, `}`, `\`, whitespace, control or non-ASCII characters.
fn url_character(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || "-._~:/?[]@!$&'()*+,=%".contains(ch)
}

fn closest_name<'a>(names: &[&'a str], wanted: &str) -> Option<&'a str> {
    let layer = Layer {
        origin: Origin::CommandLine,
        values: names
            .iter()
            .map(|n| ((*n).to_owned(), Value::Null))
            .collect(),
    };
    let found = vars::closest(&layer, wanted)?;
    names.iter().copied().find(|n| *n == found)
}
