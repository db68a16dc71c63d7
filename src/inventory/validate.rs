//! Every cross-check on the inventory. Each problem becomes one diagnostic at its place in the
//! file; all of them are reported together, and any error stops the run before a host is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{Map, Value};
use serde_saphyr::{Location, Spanned};

use super::diag::{InventoryError, Source};
use super::raw::{RawCluster, RawInventory, RawVars};
use super::secrets::{self, SecretSource};
use super::vars::{self, Layer, Origin};
use super::{Apt, Cluster, Host, Inventory, Ssh};
use crate::error::{Error, Result};

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
    defaults: &Layer,
) -> Result<Inventory> {
    let mut c = Checker {
        source: &source,
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    let hosts = check_hosts(&mut c, &raw, defaults);
    let known: Vec<&str> = raw.hosts.keys().map(String::as_str).collect();
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &raw.clusters {
        if let Some(model) = check_cluster(&mut c, name, cluster, &hosts, &known, defaults) {
            clusters.insert(name.clone(), model);
        }
    }
    check_across_clusters(&mut c, &raw, &clusters);
    check_standby_links(&mut c, &raw);
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
    let user = ssh.user.unwrap_or_else(|| "root".into());
    let become_root = ssh.become_root.unwrap_or(user != "root");
    let templates_dir =
        super::resolve_path(&dir, raw.templates_dir.as_deref().unwrap_or("templates"));
    Ok(Inventory {
        ssh: Ssh {
            port: ssh.port.unwrap_or(22),
            identity_file: ssh.identity_file.map(|p| super::resolve_path(&dir, &p)),
            known_hosts: ssh.known_hosts.map(|p| super::resolve_path(&dir, &p)),
            become_root,
            connect_timeout: ssh.connect_timeout.unwrap_or(10),
            options: ssh.options,
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

fn check_hosts(c: &mut Checker, raw: &RawInventory, defaults: &Layer) -> BTreeMap<String, Host> {
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
        if let Some(other) = by_address.insert(address, name) {
            c.error(
                host.address.referenced,
                format!("hosts `{other}` and `{name}` have the same address {address}"),
                "duplicate address",
                Some("every host needs its own address".into()),
            );
        }
        let vars_layer = layer_from(Origin::Host(name.clone()), &host.vars);
        check_var_keys(
            c,
            &vars_layer,
            defaults,
            spanned.referenced,
            &format!("host `{name}`"),
        );
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

fn layer_from(origin: Origin, vars: &RawVars) -> Layer {
    let map: Map<String, Value> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Layer::from_nested(origin, &map)
}

fn check_var_keys(c: &mut Checker, layer: &Layer, defaults: &Layer, at: Location, whose: &str) {
    for key in layer.values.keys() {
        if !vars::is_known(defaults, key) {
            let hint = match vars::closest(defaults, key) {
                Some(near) => format!("did you mean `{near}`? `pgstrap vars HOST -i INV` lists every setting"),
                None => "`pgstrap vars HOST -i INV` lists every setting; roles/*/defaults.yaml documents them".into(),
            };
            c.error(
                at,
                format!("{whose}: unknown setting `{key}`"),
                "set here",
                Some(hint),
            );
        }
    }
}

fn check_cluster(
    c: &mut Checker,
    name: &str,
    spanned: &Spanned<RawCluster>,
    hosts: &BTreeMap<String, Host>,
    known: &[&str],
    defaults: &Layer,
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
    let mut group = |c: &mut Checker, list: &[Spanned<String>], what: &str| -> Vec<String> {
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
                ok = false;
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
    };
    let etcd = group(c, &raw.etcd, "etcd");
    let postgres = group(c, &raw.postgres, "postgres");
    let balancers = group(c, &raw.balancers, "balancers");

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

    let datacenter = raw
        .datacenter
        .as_ref()
        .map(|d| d.value.clone())
        .unwrap_or_else(|| {
            postgres
                .first()
                .and_then(|h| hosts.get(h))
                .map_or_else(|| "dc1".to_owned(), |h| h.datacenter.clone())
        });

    // Networks: the inventory's, or every host's own /32.
    let networks: Vec<IpNet> = match &raw.networks {
        Some(list) => list
            .iter()
            .filter_map(|n| match n.value.parse::<IpNet>() {
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
        None => hosts.values().map(|h| IpNet::from(h.address)).collect(),
    };

    let vip = raw
        .vip
        .as_ref()
        .and_then(|v| check_vip(c, name, v, hosts, &balancers));

    let mut settings = Map::new();
    for (k, v) in &raw.vars {
        settings.insert(k.clone(), v.clone());
    }
    merge_into(
        &mut settings,
        "postgresql",
        "parameters",
        &raw.postgres_parameters,
    );
    merge_into(&mut settings, "patroni", "", &raw.patroni);
    let vars_layer = Layer::from_nested(Origin::Cluster(name.to_owned()), &settings);
    check_var_keys(c, &vars_layer, defaults, at, &format!("cluster `{name}`"));

    ok.then(|| Cluster {
        name: name.to_owned(),
        datacenter,
        etcd,
        postgres,
        balancers,
        vip,
        networks,
        vars: vars_layer,
        standby_of: raw.standby_of.as_ref().map(|s| s.value.clone()),
        location: at,
    })
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
        target.insert(k.clone(), v.clone());
    }
}

fn check_vip(
    c: &mut Checker,
    name: &str,
    vip: &Spanned<String>,
    hosts: &BTreeMap<String, Host>,
    balancers: &[String],
) -> Option<IpNet> {
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
    if let Some(owner) = hosts.values().find(|h| h.address == net.addr()) {
        c.error(
            vip.referenced,
            format!(
                "cluster `{name}`: VIP {} is the address of host `{}`",
                net.addr(),
                owner.name
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

fn check_standby_links(c: &mut Checker, raw: &RawInventory) {
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
    let mut url = |v: &Option<Spanned<String>>, what: &str| -> Option<String> {
        let v = v.as_ref()?;
        if !(v.value.starts_with("http://") || v.value.starts_with("https://")) {
            c.error(
                v.referenced,
                format!("apt {what} `{}` is not an http(s) URL", v.value),
                "expected http://…",
                Some(format!("e.g. `{what}: http://10.0.0.1:3142`")),
            );
        }
        Some(v.value.trim_end_matches('/').to_owned())
    };
    Apt {
        proxy: url(&raw.apt.proxy, "proxy"),
        mirror: url(&raw.apt.mirror, "mirror"),
    }
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
