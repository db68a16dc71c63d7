//! Role manifests: `roles/<name>/role.yaml` says what a role puts on a host (packages,
//! directories, files rendered from templates, sysctls, services, handlers, health checks) and
//! `roles/<name>/defaults.yaml` documents every setting with its default. Roles are data; this
//! module only reads them. A manifest is parsed once; its strings are templates rendered per role
//! instance (with the same context as the files), so paths and checks may use `{{ vars.… }}`:
//! a string that is one `{{ expression }}` takes the expression's value (a number, a list), any
//! other string is rendered as text. Rendering never touches the YAML text, so no value can add
//! a key or an item to a manifest.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::settings::types;
use crate::state::{HandlerAction, ServiceState};

/// The built-in roles (`roles/`), embedded so pgstrap needs no files beside it.
static EMBEDDED: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/roles");

/// A built-in role file (`<role>/role.yaml`, `<role>/defaults.yaml`).
pub fn role_file(role: &str, file: &str) -> Option<&'static str> {
    EMBEDDED
        .get_file(format!("{role}/{file}"))
        .and_then(|f| f.contents_utf8())
}

/// The built-in roles in the order the stack needs them: every folder of `roles/` with a
/// `role.yaml`, by its `phase` (then by name). Found in the data, so a new role is a new folder.
pub fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        #[derive(Deserialize)]
        struct Phase {
            phase: u32,
        }
        let mut found: Vec<(u32, &'static str)> = EMBEDDED
            .dirs()
            .filter_map(|dir| {
                let name = dir.path().to_str()?;
                let text = role_file(name, "role.yaml")?;
                // A manifest that does not parse still counts: `manifest_sources` says why.
                let phase = serde_saphyr::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|tree| serde_json::from_value::<Phase>(tree).ok())
                    .map_or(u32::MAX, |p| p.phase);
                Some((phase, name))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, name)| name).collect()
    })
}

/// Which hosts of a cluster a role applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// Every host in the inventory (once per host, not per cluster).
    All,
    Etcd,
    Postgres,
    Balancers,
    /// The cluster's backup repository host (`backup: {repository: [host]}`).
    Backup,
}

/// `roles/<name>/role.yaml`, after rendering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub description: String,
    pub applies_to: AppliesTo,
    /// Lower phases are applied first (common 10, etcd 20, postgresql 30, patroni 40…).
    pub phase: u32,
    /// A Jinja expression; the role applies only where it is true (e.g. `cluster.vip`).
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub directories: Vec<DirectorySpec>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Kernel settings (`net.ipv4.ip_nonlocal_bind: 1`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub handlers: Vec<HandlerSpec>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Ports this role listens on (`name: number`), for the port-clash check.
    #[serde(default)]
    /// Ports the role listens on, by name (0: none here, e.g. a server the role starts only
    /// on some hosts).
    pub ports: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    pub path: String,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    #[serde(default = "dir_mode")]
    pub mode: String,
    /// Created before the package transaction (for package-manager configuration).
    #[serde(default)]
    pub before_packages: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Template name, `<role>/<file>.j2`, looked up in the override directory, then built in.
    pub template: String,
    /// Absolute path on the host.
    pub dest: String,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    #[serde(default = "file_mode")]
    pub mode: String,
    /// The file holds secrets (mode must not be world-readable; diffs are masked).
    #[serde(default)]
    pub sensitive: bool,
    /// The file carries the cluster's identity (the CA it trusts, or its passwords): a host that
    /// holds another one is never overwritten from an inventory without it (`exec::identity`).
    #[serde(default)]
    pub identity: Option<crate::state::Identity>,
    /// Handlers to run when this file changes.
    #[serde(default)]
    pub notify: Vec<String>,
    /// A Jinja expression; the file is managed only where it is true.
    #[serde(default)]
    pub when: Option<String>,
    /// Written before the package transaction: configuration the package manager or a package's
    /// install scripts read (an apt proxy; `create_main_cluster = false`).
    #[serde(default)]
    pub before_packages: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub state: ServiceState,
    /// A Jinja expression; the unit is managed only where it is true.
    #[serde(default)]
    pub when: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSpec {
    pub name: String,
    #[serde(default)]
    pub service: Option<String>,
    pub action: HandlerAction,
    /// Run on one host at a time across the whole run (a restart of a quorum member: every
    /// member restarting at once would lose the quorum).
    #[serde(default)]
    pub one_at_a_time: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub name: String,
    /// `http: URL` (+ `expect`), `tcp: HOST:PORT`, or `command: [argv…]` run on the host.
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub expect: Option<u16>,
    #[serde(default)]
    pub tcp: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A Jinja expression; the check runs only where it is true.
    #[serde(default)]
    pub when: Option<String>,
}

fn root() -> String {
    "root".into()
}
fn dir_mode() -> String {
    "0755".into()
}
fn file_mode() -> String {
    "0644".into()
}

/// Parse an octal mode written as a string (`"0640"`).
pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
}

/// One supported Debian release (`roles/common/releases.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub name: String,
    pub codename: String,
    /// PostgreSQL majors the release ships.
    pub postgresql: Vec<u32>,
    /// Why `backup:` cannot be used on this release yet (none: it can).
    #[serde(default)]
    pub backups_unsupported: Option<String>,
}

/// `roles/common/releases.yaml`: the supported releases and the default one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Releases {
    pub default: String,
    pub releases: BTreeMap<String, Release>,
}

impl Releases {
    pub fn get(&self, id: &str) -> Option<&Release> {
        self.releases.get(id)
    }

    /// "12, 13" for messages.
    pub fn supported(&self) -> String {
        self.releases
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The supported releases (built in; parsed once).
pub fn releases() -> &'static Releases {
    static RELEASES: std::sync::OnceLock<Releases> = std::sync::OnceLock::new();
    RELEASES.get_or_init(|| {
        let text =
            role_file("common", "releases.yaml").expect("roles/common/releases.yaml is built in");
        // Invariant: the built-in file is valid (a unit test parses it).
        serde_saphyr::from_str(text).expect("roles/common/releases.yaml is valid")
    })
}

/// A built-in settings file of a role as one layer (`None` when the role has no such file).
fn settings_layer(
    role: &str,
    file: &str,
    origin: crate::settings::vars::Origin,
) -> crate::error::Result<Option<crate::settings::vars::Layer>> {
    let Some(text) = role_file(role, file) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        crate::error::Error::failure(
            format!("built-in roles/{role}/{file} is invalid: {e}"),
            None,
        )
    })?;
    let map = match value {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        _ => {
            return Err(crate::error::Error::failure(
                format!("built-in roles/{role}/{file} must be a mapping"),
                None,
            ))
        }
    };
    Ok(Some(crate::settings::vars::Layer::from_nested(
        origin, &map,
    )))
}

/// Every setting's type, from the annotations beside the defaults (built in; read once).
pub fn schema() -> crate::error::Result<&'static types::Schema> {
    static SCHEMA: std::sync::OnceLock<Result<types::Schema, String>> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut schema = types::Schema::default();
            for role in names() {
                if let Some(text) = role_file(role, "defaults.yaml") {
                    schema.add_file(&format!("roles/{role}/defaults.yaml"), text)?;
                }
            }
            Ok(schema)
        })
        .as_ref()
        .map_err(|e| crate::error::Error::failure(format!("built-in {e}"), None))
}

/// The default settings of every role, one layer per role (lowest precedence).
pub fn default_layers() -> crate::error::Result<Vec<crate::settings::vars::Layer>> {
    use crate::settings::vars::Origin;
    let mut layers = Vec::new();
    for role in names() {
        layers.extend(settings_layer(
            role,
            "defaults.yaml",
            Origin::RoleDefault((*role).to_owned()),
        )?);
    }
    Ok(layers)
}

/// What differs on `release` (`roles/<role>/debian-<release>.yaml`), one layer per role that has
/// a difference; it sits right above the role defaults.
pub fn release_layers(release: &str) -> crate::error::Result<Vec<crate::settings::vars::Layer>> {
    use crate::settings::vars::Origin;
    let mut layers = Vec::new();
    for role in names() {
        layers.extend(settings_layer(
            role,
            &format!("debian-{release}.yaml"),
            Origin::Release(format!("debian {release}, {role}")),
        )?);
    }
    Ok(layers)
}

/// All role defaults merged into one layer (for checking that a setting exists).
pub fn all_defaults(layers: &[crate::settings::vars::Layer]) -> crate::settings::vars::Layer {
    let mut merged = crate::settings::vars::Layer {
        origin: crate::settings::vars::Origin::RoleDefault("*".into()),
        values: BTreeMap::new(),
    };
    for layer in layers {
        merged
            .values
            .extend(layer.values.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    merged
}

/// A role manifest as written (`roles/<name>/role.yaml`), parsed once per run: a YAML tree whose
/// strings may be templates. Each role instance renders the strings (see `render`), never the
/// text: a value, whatever it holds, stays the value of its field and cannot add keys or items.
#[derive(Debug)]
pub struct ManifestSource {
    pub role: &'static str,
    pub applies_to: AppliesTo,
    /// The manifest as parsed, before rendering.
    pub tree: serde_json::Value,
}

/// Every built-in role's manifest, parsed once.
pub fn manifest_sources() -> crate::error::Result<&'static BTreeMap<&'static str, ManifestSource>> {
    static SOURCES: std::sync::OnceLock<Result<BTreeMap<&'static str, ManifestSource>, String>> =
        std::sync::OnceLock::new();
    SOURCES
        .get_or_init(|| {
            let mut sources = BTreeMap::new();
            for role in names() {
                let text = role_file(role, "role.yaml")
                    .ok_or_else(|| format!("built-in role `{role}` has no role.yaml"))?;
                let tree: serde_json::Value = serde_saphyr::from_str(text)
                    .map_err(|e| format!("built-in roles/{role}/role.yaml is invalid: {e}"))?;
                let applies_to: AppliesTo = serde_json::from_value(tree["applies_to"].clone())
                    .map_err(|e| format!("roles/{role}/role.yaml: applies_to: {e}"))?;
                sources.insert(
                    *role,
                    ManifestSource {
                        role,
                        applies_to,
                        tree,
                    },
                );
            }
            Ok(sources)
        })
        .as_ref()
        .map_err(|e| crate::error::Error::failure(e, None))
}

/// A manifest from its rendered tree.
pub fn manifest_from_tree(role: &str, tree: serde_json::Value) -> crate::error::Result<Manifest> {
    serde_json::from_value(tree).map_err(|e| {
        crate::error::Error::usage(
            format!("roles/{role}/role.yaml (after rendering): {e}"),
            Some("the schema is in src/role/mod.rs".into()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roles_are_found_in_phase_order() {
        let sources = manifest_sources().unwrap();
        let phases: Vec<u32> = names()
            .iter()
            .map(|name| sources[name].tree["phase"].as_u64().unwrap() as u32)
            .collect();
        assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
        assert_eq!(names().first(), Some(&"common"));
        assert!(names().contains(&"keepalived") && names().contains(&"pgbackrest"));
    }

    #[test]
    fn built_in_manifests_parse() {
        let sources = manifest_sources().unwrap();
        assert_eq!(sources.len(), names().len());
        assert_eq!(sources["etcd"].applies_to, AppliesTo::Etcd);
    }

    #[test]
    fn built_in_releases_parse_and_name_the_default() {
        let releases = releases();
        assert!(releases.get(&releases.default).is_some());
        assert_eq!(releases.supported(), "12, 13");
    }

    #[test]
    fn release_files_only_override_settings_the_defaults_declare_with_values_of_their_type() {
        let schema = schema().unwrap();
        for id in releases().releases.keys() {
            for layer in release_layers(id).unwrap() {
                for (key, value) in &layer.values {
                    assert_eq!(
                        schema.check(key, value),
                        Ok(()),
                        "{}: `{key}` = {value}",
                        layer.origin
                    );
                }
            }
        }
    }

    #[test]
    fn every_default_has_a_type_and_fits_it() {
        let schema = schema().unwrap();
        for layer in default_layers().unwrap() {
            for (key, value) in &layer.values {
                assert_eq!(
                    schema.check(key, value),
                    Ok(()),
                    "{}: `{key}` = {value}: declare its type with `# type: …` beside it",
                    layer.origin
                );
            }
        }
    }

    #[test]
    fn every_type_annotation_names_a_default() {
        let defaults = all_defaults(&default_layers().unwrap());
        for (key, _) in schema().unwrap().iter() {
            let below = format!("{key}.");
            assert!(
                defaults.values.contains_key(key)
                    || defaults.values.keys().any(|k| k.starts_with(&below)),
                "`{key}` has a type but no default"
            );
        }
    }

    #[test]
    fn each_release_defaults_to_a_postgresql_it_ships() {
        for (id, release) in &releases().releases {
            let layers = release_layers(id).unwrap();
            let version = layers
                .iter()
                .find_map(|l| l.values.get("postgresql.version"))
                .and_then(serde_json::Value::as_u64)
                .unwrap();
            assert!(
                release.postgresql.contains(&(version as u32)),
                "debian {id}"
            );
        }
    }
}
