//! From a validated inventory to the desired state of every host: resolve each host's settings,
//! build the template context, render each role's manifest and files. Nothing here touches a host.
//!
//! `engine.rs` owns the template engine and lookup; `context.rs` the variables a template sees.

mod commands;
pub mod context;
pub mod engine;
pub mod output;

pub use commands::{
    check, host_vars, render_to_dir, template_list, template_show, CheckSummary, Rendered,
    VarEntry, VarsView,
};

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::inventory::secrets::Secrets;
use crate::inventory::{Cluster, Host};
use crate::project::Project;
use crate::role::{self, AppliesTo, Manifest};
use crate::state::{
    DesiredState, Directory, Handler, HealthCheck, HealthCheckKind, HostState, ManagedFile,
    RoleState, Service, Sysctl,
};
use engine::Engine;

/// Render the desired state of every host (or only `only` when given).
///
/// Everything that is the same for many role instances is built once and shared: each cluster's
/// `cluster` value, the inventory's host list, the secrets, and the settings as templates see
/// them (by release, cluster, and host when the host has settings of its own). The work is then
/// linear in the number of role instances (and the size of what they render).
pub fn desired_state(
    project: &Project,
    secrets: &Secrets,
    only: Option<&[String]>,
) -> Result<DesiredState> {
    let masker = secrets.masker();
    let engine = Engine::new(&project.inventory.templates_dir).with_masker(masker.clone());
    let clusters = context::clusters(project)?
        .into_iter()
        .map(|(name, value)| (name, mj(&value)))
        .collect();
    let renderer = Renderer {
        project,
        engine,
        clusters,
        shared: context::Shared::new(project, secrets),
        vars: Default::default(),
        instances: instances_by_host(project),
        manifests: role::manifest_sources()?,
    };
    let mut hosts = Vec::new();
    for host in project.inventory.hosts.values() {
        if only.is_some_and(|names| !names.contains(&host.name)) {
            continue;
        }
        hosts.push(renderer.host_state(host)?);
    }
    check_ports(project, &hosts)?;
    Ok(DesiredState { hosts, masker })
}

/// One role instance on a host: the cluster, the group the host is in, and its index there.
type Instance<'a> = (&'a Cluster, AppliesTo, usize);

/// Every host's place in every cluster, indexed once (not a scan of every cluster per host).
fn instances_by_host(project: &Project) -> BTreeMap<&str, Vec<Instance<'_>>> {
    let mut index: BTreeMap<&str, Vec<Instance<'_>>> = BTreeMap::new();
    for cluster in project.inventory.clusters.values() {
        for (group, list) in [
            (AppliesTo::Etcd, &cluster.etcd),
            (AppliesTo::Postgres, &cluster.postgres),
            (AppliesTo::Balancers, &cluster.balancers),
            (AppliesTo::Backup, &cluster.backup),
        ] {
            for (position, name) in list.iter().enumerate() {
                index
                    .entry(name.as_str())
                    .or_default()
                    .push((cluster, group, position));
            }
        }
    }
    index
}

/// What [`desired_state`] shares between hosts.
struct Renderer<'a> {
    project: &'a Project,
    engine: Engine,
    clusters: BTreeMap<String, minijinja::Value>,
    shared: context::Shared,
    /// `vars` as templates see them, by (release, cluster, host with settings of its own).
    vars: std::cell::RefCell<VarsCache>,
    instances: BTreeMap<&'a str, Vec<Instance<'a>>>,
    manifests: &'static BTreeMap<&'static str, role::ManifestSource>,
}

type VarsCache =
    std::collections::HashMap<(String, Option<String>, Option<String>), minijinja::Value>;

impl Renderer<'_> {
    /// The settings of `host` in `cluster` as templates see them (nested).
    fn vars(&self, host: &Host, cluster: Option<&Cluster>) -> minijinja::Value {
        let key = (
            self.project.release_of(&host.name),
            cluster.map(|c| c.name.clone()),
            self.project
                .has_own_settings(host, cluster)
                .then(|| host.name.clone()),
        );
        if let Some(value) = self.vars.borrow().get(&key) {
            return value.clone();
        }
        let value = mj(&self.project.vars(host, cluster).to_nested());
        self.vars.borrow_mut().insert(key, value.clone());
        value
    }

    fn host_state(&self, host: &Host) -> Result<HostState> {
        let instances = self
            .instances
            .get(host.name.as_str())
            .map_or(&[][..], Vec::as_slice);
        let mut all_groups: Vec<&str> = instances
            .iter()
            .map(|(_, group, _)| group_name(*group))
            .collect();
        all_groups.sort();
        all_groups.dedup();
        let mut roles = Vec::new();
        for role_name in role::names() {
            let source = self.manifests.get(role_name).ok_or_else(|| {
                Error::failure(
                    format!("built-in role `{role_name}` has no role.yaml"),
                    None,
                )
            })?;
            // Which (cluster, index in group) instances of this role land on this host.
            let applies = source.applies_to;
            let mine: Vec<(Option<&Cluster>, usize)> = match applies {
                AppliesTo::All => vec![(None, 0)],
                group => instances
                    .iter()
                    .filter(|(_, g, _)| *g == group)
                    .map(|(c, _, i)| (Some(*c), *i))
                    .collect(),
            };
            for (cluster, index) in mine {
                let cluster_ctx = cluster
                    .and_then(|c| self.clusters.get(&c.name))
                    .cloned()
                    .unwrap_or(minijinja::Value::from(()));
                let cluster_groups =
                    cluster.map_or_else(Vec::new, |c| crate::inventory::groups_of(c, &host.name));
                let ctx = self.shared.template_context(
                    host,
                    &all_groups,
                    &cluster_groups,
                    cluster_ctx,
                    index,
                    self.vars(host, cluster),
                );
                let manifest = render_manifest(&self.engine, source, &ctx)?;
                let whose = format!("role {role_name}");
                if let Some(when) = &manifest.when {
                    if !self.engine.truthy(when, &ctx, &whose)? {
                        continue;
                    }
                }
                roles.push(role_state(
                    &self.engine,
                    role_name,
                    cluster,
                    &manifest,
                    &ctx,
                    host,
                )?);
            }
        }
        roles.sort_by_key(|r| r.phase);
        self.refuse_shared_paths(host, &roles)?;
        Ok(HostState {
            host: host.name.clone(),
            address: host.address.to_string(),
            roles,
        })
    }
}

impl Renderer<'_> {
    /// Two role instances on one host (a balancer or etcd host in two clusters) that would write
    /// one path with different content: the last would silently win and the other cluster lose
    /// its configuration (its VIP, its backends, its etcd). Refused, both clusters named. The
    /// same content (the CA, a role's helper scripts) is fine.
    fn refuse_shared_paths(&self, host: &Host, roles: &[crate::state::RoleState]) -> Result<()> {
        let mut written: BTreeMap<&str, (&crate::state::RoleState, &str)> = BTreeMap::new();
        for role in roles {
            for file in &role.files {
                let Some((other, sha)) = written.insert(&file.path, (role, &file.sha256)) else {
                    continue;
                };
                if sha == file.sha256 {
                    continue;
                }
                let name = |r: &crate::state::RoleState| {
                    r.cluster
                        .as_deref()
                        .map_or_else(|| "every host".to_owned(), |c| format!("cluster `{c}`"))
                };
                let location = role
                    .cluster
                    .as_deref()
                    .and_then(|c| self.project.inventory.clusters.get(c))
                    .map(|c| c.location);
                return Err(Error::bad_input(
                    self.project
                        .inventory
                        .error_at(
                            location,
                            format!(
                                "host `{}` would get two different {} (role {} of {} and of {}): one host serves one cluster per role",
                                host.name,
                                file.path,
                                role.role,
                                name(other),
                                name(role)
                            ),
                            "this cluster",
                        )
                        .hint(format!(
                            "give each cluster its own {} hosts (a host in the `{}` group of two clusters is not supported yet)",
                            role.role,
                            self.manifests
                                .get(role.role.as_str())
                                .map_or("same", |m| group_name(m.applies_to))
                        )),
                ));
            }
        }
        Ok(())
    }
}

/// A template value from anything serializable (JSON values, mostly).
pub(crate) fn mj(value: &impl serde::Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

fn group_name(group: AppliesTo) -> &'static str {
    match group {
        AppliesTo::Etcd => "etcd",
        AppliesTo::Postgres => "postgres",
        AppliesTo::Balancers => "balancers",
        AppliesTo::Backup => "backup",
        AppliesTo::All => "all",
    }
}

/// Render a manifest's strings for one role instance (see [`role::ManifestSource`]).
fn render_manifest(
    engine: &Engine,
    source: &role::ManifestSource,
    ctx: &minijinja::Value,
) -> Result<Manifest> {
    let mut path = String::new();
    let tree = render_tree(engine, source.role, &mut path, &source.tree, ctx)?;
    role::manifest_from_tree(source.role, tree).map_err(|e| e.masked(engine.masker()))
}

fn render_tree(
    engine: &Engine,
    role_name: &str,
    path: &mut String,
    value: &Value,
    ctx: &minijinja::Value,
) -> Result<Value> {
    let descend = |path: &mut String, key: &str, value: &Value| {
        let length = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        let rendered = render_tree(engine, role_name, path, value, ctx);
        path.truncate(length);
        rendered
    };
    Ok(match value {
        Value::String(text) if text.contains("{{") || text.contains("{%") => {
            let failed = |e: minijinja::Error| {
                let detail = e
                    .detail()
                    .map_or_else(|| e.kind().to_string(), str::to_owned);
                Error::usage(
                    format!("roles/{role_name}/role.yaml `{path}`: `{text}`: {detail}"),
                    Some("templates/README.md lists what a template can use".into()),
                )
                .masked(engine.masker())
            };
            match whole_expression(text) {
                // The expression's value itself (a number stays a number, a list a list).
                Some(expression) => {
                    let json = engine
                        .render_snippet(&format!("{{{{ ({expression}) | tojson }}}}"), ctx)
                        .map_err(failed)?;
                    serde_json::from_str(&json).map_err(|e| {
                        Error::failure(format!("roles/{role_name}/role.yaml `{path}`: {e}"), None)
                    })?
                }
                None => Value::String(engine.render_snippet(text, ctx).map_err(failed)?),
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| descend(path, &i.to_string(), item))
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), descend(path, k, v)?)))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// `{{ expression }}` when that is the whole string, else `None`.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then(|| inner.trim())
}

fn mode(text: &str, whose: &str) -> Result<u32> {
    role::parse_mode(text).ok_or_else(|| {
        Error::usage(
            format!("{whose}: mode `{text}` is not an octal mode"),
            Some("write modes as quoted octal strings, e.g. \"0640\"".into()),
        )
    })
}

/// What `manifest` puts on `host` for the role `role_name` (of `cluster`), rendered in `ctx`.
fn role_state(
    engine: &Engine,
    role_name: &str,
    cluster: Option<&Cluster>,
    manifest: &Manifest,
    ctx: &minijinja::Value,
    host: &Host,
) -> Result<RoleState> {
    let whose = format!("role {role_name}");
    let mut before_packages: Vec<String> = manifest
        .directories
        .iter()
        .filter(|d| d.before_packages)
        .map(|d| d.path.clone())
        .collect();
    let files = role_files(engine, manifest, ctx, &whose, &mut before_packages)?;
    let directories = role_directories(manifest, &whose)?;
    let checks = role_checks(engine, manifest, ctx, &whose, host)?;
    let services = role_services(engine, manifest, ctx, &whose)?;
    Ok(RoleState {
        role: role_name.to_owned(),
        cluster: cluster.map(|c| c.name.clone()),
        phase: manifest.phase,
        packages: manifest.packages.clone(),
        directories,
        files,
        sysctls: manifest
            .sysctls
            .iter()
            .map(|(k, v)| Sysctl {
                key: k.clone(),
                value: scalar(v),
            })
            .collect(),
        services,
        handlers: manifest
            .handlers
            .iter()
            .map(|h| Handler {
                name: h.name.clone(),
                service: h.service.clone(),
                action: h.action,
                one_at_a_time: h.one_at_a_time,
            })
            .collect(),
        checks,
        ports: role_ports(manifest, &whose)?,
        before_packages,
    })
}

/// Whether a part of a manifest (`what`) applies: it has no `when`, or its `when` holds in `ctx`.
fn applies(
    engine: &Engine,
    when: Option<&str>,
    ctx: &minijinja::Value,
    what: impl FnOnce() -> String,
) -> Result<bool> {
    match when {
        Some(when) => engine.truthy(when, ctx, &what()),
        None => Ok(true),
    }
}

/// The role's files that apply, rendered and checked (a file of secrets must be sensitive, a
/// sensitive file unreadable by others); those written before packages are added to
/// `before_packages`.
fn role_files(
    engine: &Engine,
    manifest: &Manifest,
    ctx: &minijinja::Value,
    whose: &str,
    before_packages: &mut Vec<String>,
) -> Result<Vec<ManagedFile>> {
    let mut files = Vec::new();
    for spec in &manifest.files {
        if !applies(engine, spec.when.as_deref(), ctx, || {
            format!("{whose} file {}", spec.dest)
        })? {
            continue;
        }
        let content = engine.render(&spec.template, ctx)?;
        let file_mode = mode(&spec.mode, &format!("{whose} file {}", spec.dest))?;
        if spec.identity == Some(crate::state::Identity::Secrets) && !spec.sensitive {
            return Err(Error::usage(
                format!("{whose}: {} carries passwords (`identity: secrets`) but is not marked `sensitive: true`", spec.dest),
                Some("mark it `sensitive: true` (mode 0600 or 0640, diffs masked)".into()),
            ));
        }
        if spec.sensitive && file_mode & 0o007 != 0 {
            return Err(Error::usage(
                format!(
                    "{whose}: {} holds secrets but its mode {:04o} lets everyone read it",
                    spec.dest, file_mode
                ),
                Some("use 0600 or 0640 for files marked `sensitive: true`".into()),
            ));
        }
        if spec.before_packages {
            before_packages.push(spec.dest.clone());
        }
        files.push(ManagedFile {
            path: spec.dest.clone(),
            template: spec.template.clone(),
            template_origin: engine.origin(&spec.template).to_string(),
            sha256: hex::encode(Sha256::digest(content.as_bytes())),
            content,
            owner: spec.owner.clone(),
            group: spec.group.clone(),
            mode: file_mode,
            sensitive: spec.sensitive,
            identity: spec.identity,
            notify: spec.notify.clone(),
        });
    }
    Ok(files)
}

/// The role's directories, their modes checked.
fn role_directories(manifest: &Manifest, whose: &str) -> Result<Vec<Directory>> {
    manifest
        .directories
        .iter()
        .map(|d| {
            Ok(Directory {
                path: d.path.clone(),
                owner: d.owner.clone(),
                group: d.group.clone(),
                mode: mode(&d.mode, &format!("{whose} directory {}", d.path))?,
            })
        })
        .collect()
}

/// The role's health checks that apply on `host`.
fn role_checks(
    engine: &Engine,
    manifest: &Manifest,
    ctx: &minijinja::Value,
    whose: &str,
    host: &Host,
) -> Result<Vec<HealthCheck>> {
    let mut checks = Vec::new();
    for spec in &manifest.checks {
        if applies(engine, spec.when.as_deref(), ctx, || {
            format!("{whose} check {}", spec.name)
        })? {
            checks.push(health_check(spec, whose, host)?);
        }
    }
    Ok(checks)
}

/// The role's services that apply, with the state each should be in.
fn role_services(
    engine: &Engine,
    manifest: &Manifest,
    ctx: &minijinja::Value,
    whose: &str,
) -> Result<Vec<Service>> {
    let mut services = Vec::new();
    for spec in &manifest.services {
        if applies(engine, spec.when.as_deref(), ctx, || {
            format!("{whose} service {}", spec.name)
        })? {
            services.push(Service {
                name: spec.name.clone(),
                state: spec.state,
            });
        }
    }
    Ok(services)
}

/// The role's ports, each a number (a port of 0 is left out).
fn role_ports(manifest: &Manifest, whose: &str) -> Result<Vec<(String, u64)>> {
    Ok(manifest
        .ports
        .iter()
        .map(|(name, v)| {
            scalar(v)
                .parse::<u64>()
                .map(|p| (name.clone(), p))
                .map_err(|_| {
                    Error::usage(
                        format!("{whose}: port `{name}` is `{}`, not a number", scalar(v)),
                        Some("ports are numbers between 1 and 65535".into()),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, port)| *port != 0)
        .collect())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn health_check(spec: &role::CheckSpec, whose: &str, host: &Host) -> Result<HealthCheck> {
    let kind = if let Some(url) = &spec.http {
        HealthCheckKind::Http {
            url: url.clone(),
            expect: spec.expect.unwrap_or(200),
        }
    } else if let Some(target) = &spec.tcp {
        let (address, port) = target
            .rsplit_once(':')
            .and_then(|(a, p)| Some((a.to_owned(), p.parse().ok()?)))
            .unwrap_or_else(|| (host.address.to_string(), 0));
        if port == 0 {
            return Err(Error::usage(
                format!(
                    "{whose}: check `{}`: `tcp` needs HOST:PORT, got `{target}`",
                    spec.name
                ),
                None,
            ));
        }
        HealthCheckKind::Tcp { address, port }
    } else if let Some(argv) = &spec.command {
        HealthCheckKind::Command { argv: argv.clone() }
    } else {
        return Err(Error::usage(
            format!(
                "{whose}: check `{}` needs `http`, `tcp` or `command`",
                spec.name
            ),
            None,
        ));
    };
    Ok(HealthCheck {
        name: spec.name.clone(),
        kind,
    })
}

/// Two roles on one host must not listen on the same port.
fn check_ports(project: &Project, hosts: &[HostState]) -> Result<()> {
    let mut errors = Vec::new();
    for state in hosts {
        // port → (the port's name, its cluster, who uses it)
        let mut used: BTreeMap<u64, (&str, Option<&str>, String)> = BTreeMap::new();
        let Some(host) = project.inventory.hosts.get(&state.host) else {
            continue;
        };
        for role_state in &state.roles {
            let role_name = &role_state.role;
            for (name, port) in &role_state.ports {
                let port = *port;
                let owner = match &role_state.cluster {
                    Some(c) => format!("{role_name} {name} (cluster {c})"),
                    None => format!("{role_name} {name}"),
                };
                let key = (name.as_str(), role_state.cluster.as_deref(), owner.clone());
                if let Some((previous_name, previous_cluster, previous)) = used.insert(port, key) {
                    // One server two roles of a cluster share (pgBackRest's, on a repository
                    // host that is also a DB host).
                    if previous_name == name && previous_cluster == role_state.cluster.as_deref() {
                        continue;
                    }
                    errors.push(
                        project
                            .inventory
                            .error_at(
                                Some(host.location),
                                format!("host `{}`: port {port} is used by both {previous} and {owner}", host.name),
                                "this host",
                            )
                            .hint("change one of the ports in the cluster's or host's `vars` (see `pgstrap vars HOST -i INV`), or put the roles on different hosts"),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error {
            kind: crate::error::ErrorKind::BadInput,
            reports: errors.into_iter().map(Into::into).collect(),
        })
    }
}
