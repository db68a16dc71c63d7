//! Property test (issue 11): a setting value can never change the structure of a generated
//! file. For random strings (newlines, quotes, `#`, `{}`, `;`, non-ASCII…) set on any setting,
//! a PostgreSQL parameter name, a datacenter or the apt proxy, either `check` (load + render)
//! refuses the inventory, or every rendered file has the same structure as with a plain value:
//! the same files, the same number of lines, the same keys (YAML files) and the same leading
//! word on every line (the other formats: ini, haproxy, keepalived, environment files).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Value};

mod common;

/// Two clusters (a primary with balancers and a VIP, and its DR standby), so every template and
/// role renders. `@@…@@` are replaced by the value under test or a plain one.
const INVENTORY: &str = r#"
apt: {proxy: @@APT@@}
hosts:
  pg1: {address: 10.10.0.11, datacenter: @@DC@@, vars: @@PG1@@}
  pg2: {address: 10.10.0.12}
  pg3: {address: 10.10.0.13}
  lb1: {address: 10.10.0.21, vars: @@LB1@@}
  lb2: {address: 10.10.0.22}
  dr1: {address: 10.20.0.11, datacenter: dc2}
  dr2: {address: 10.20.0.12, datacenter: dc2}
  dr3: {address: 10.20.0.13, datacenter: dc2}
clusters:
  main:
    etcd: [pg1, pg2, pg3]
    postgres: [pg1, pg2, pg3]
    balancers: [lb1, lb2]
    vip: 10.10.0.100/24
    networks: [10.10.0.0/24, 10.20.0.0/24]
    postgres_parameters: @@PARAMETERS@@
    vars: @@CLUSTER@@
  dr:
    standby_of: main
    etcd: [dr1, dr2, dr3]
    postgres: [dr1, dr2, dr3]
    networks: [10.10.0.0/24, 10.20.0.0/24]
"#;

/// Where a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    Cluster,
    DbHost,
    Balancer,
}

/// What is varied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A declared setting (dotted key), written at a place.
    Setting(String, Place),
    /// The name of a PostgreSQL parameter (`postgres_parameters: {NAME: on}`).
    ParameterName,
    Datacenter,
    AptProxy,
}

/// Every rendered file, by (host, path).
type Files = BTreeMap<(String, String), String>;

/// JSON is YAML: a value written as a JSON literal reads back exactly (a string stays a string).
fn nested(key: &str, value: Value) -> Value {
    key.rsplit('.')
        .fold(value, |inner, part| json!({ part: inner }))
}

fn inventory_text(target: &Target, value: &Value) -> String {
    let empty = "{}".to_owned();
    let (mut cluster, mut db, mut balancer, mut parameters) =
        (empty.clone(), empty.clone(), empty.clone(), empty.clone());
    let mut datacenter = "dc1".to_owned();
    let mut apt = "\"http://10.0.0.1:3142\"".to_owned();
    match target {
        Target::Setting(key, place) => {
            let vars = nested(key, value.clone()).to_string();
            match place {
                Place::Cluster => cluster = vars,
                Place::DbHost => db = vars,
                Place::Balancer => balancer = vars,
            }
        }
        Target::ParameterName => {
            let name = value.as_str().unwrap_or_default();
            let mut map = serde_json::Map::new();
            map.insert(name.to_owned(), json!("on"));
            parameters = Value::Object(map).to_string();
        }
        Target::Datacenter => datacenter = value.to_string(),
        Target::AptProxy => apt = value.to_string(),
    }
    INVENTORY
        .replace("@@DC@@", &datacenter)
        .replace("@@APT@@", &apt)
        .replace("@@CLUSTER@@", &cluster)
        .replace("@@PG1@@", &db)
        .replace("@@LB1@@", &balancer)
        .replace("@@PARAMETERS@@", &parameters)
}

/// `check`'s verdict on the inventory with `value` at `target`: `None` when refused, else
/// every rendered file.
fn render(target: &Target, value: &Value) -> Option<Files> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, inventory_text(target, value)).expect("write inventory");
    let secrets = common::cli::secrets_yaml(|name, _| format!("{name}x"));
    common::cli::write_secrets(dir.path().join("inventory.secrets.yaml"), secrets);
    let project = pgstrap::project::load(&path, &[]).ok()?;
    let secrets = project.secrets(false).ok()?;
    let state = pgstrap::render::desired_state(&project, &secrets, None).ok()?;
    let mut files = Files::new();
    for host in &state.hosts {
        for file in host.files() {
            files.insert((host.host.clone(), file.path.clone()), file.content.clone());
        }
    }
    Some(files)
}

/// The structure of a file: its line count, and for YAML every key path (list items by index),
/// for everything else the leading word of every line that is not a comment.
fn structure(path: &str, content: &str, rename: Option<(&str, &str)>) -> (usize, Vec<String>) {
    let lines = content.lines().count();
    if path.ends_with(".yml") || path.ends_with(".yaml") {
        let value: Value = serde_saphyr::from_str(content)
            .unwrap_or_else(|e| panic!("{path} is not valid YAML any more: {e}\n{content}"));
        let mut keys = Vec::new();
        key_paths("", &value, &mut keys);
        if let Some((from, to)) = rename {
            // The parameter's own key (`…/parameters/NAME`), nothing else.
            let from = format!("/parameters/{from}");
            let to = format!("/parameters/{to}");
            for key in &mut keys {
                if let Some(start) = key.strip_suffix(from.as_str()) {
                    *key = format!("{start}{to}");
                }
            }
        }
        keys.sort();
        return (lines, keys);
    }
    let words = content
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']) && !l.starts_with("//"))
        .map(|l| {
            if path.ends_with("userlist.txt") {
                // `"user" "password"`: a line is its quoted fields (`""` inside is a quote).
                return format!("{} quoted fields", quoted_fields(l).unwrap_or(usize::MAX));
            }
            l.split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    (lines, words)
}

/// The number of `"…"` fields on a line separated by spaces, or `None` if it is not only that.
fn quoted_fields(line: &str) -> Option<usize> {
    let mut chars = line.trim().chars().peekable();
    let mut fields = 0;
    while chars.peek().is_some() {
        if chars.next()? != '"' {
            return None;
        }
        loop {
            match chars.next()? {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
        fields += 1;
        while chars.peek() == Some(&' ') {
            chars.next();
        }
    }
    Some(fields)
}

fn key_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = format!("{prefix}/{key}");
                out.push(path.clone());
                key_paths(&path, inner, out);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                key_paths(&format!("{prefix}[{i}]"), inner, out);
            }
        }
        _ => {}
    }
}

/// A plain value for `target`: its default (settings), or an ordinary word.
fn plain(target: &Target) -> Value {
    match target {
        Target::Setting(key, _) => {
            let mut layers = pgstrap::role::default_layers().expect("defaults");
            let release = &pgstrap::role::releases().default;
            layers.extend(pgstrap::role::release_layers(release).expect("release"));
            let defaults = pgstrap::settings::vars::resolve(&layers);
            defaults
                .get(key)
                .cloned()
                .expect("every setting has a default")
        }
        Target::ParameterName => json!("pgstrap_fuzz"),
        Target::Datacenter => json!("dc1"),
        Target::AptProxy => json!("http://10.0.0.1:3142"),
    }
}

thread_local! {
    /// The plain rendering of each target, computed once.
    static PLAIN: RefCell<HashMap<Target, Files>> = RefCell::new(HashMap::new());
}

fn targets() -> Vec<Target> {
    let mut targets = vec![Target::ParameterName, Target::Datacenter, Target::AptProxy];
    let schema = pgstrap::role::schema().expect("schema");
    for (key, ty) in schema.iter() {
        // A mapping's entries are settings of their own (and ParameterName varies the names);
        // the PgBouncer version decides which lines are written, by design.
        if matches!(ty, pgstrap::settings::types::SettingType::Map(_)) || key == "pgbouncer.version"
        {
            continue;
        }
        for place in [Place::Cluster, Place::DbHost, Place::Balancer] {
            targets.push(Target::Setting(key.clone(), place));
        }
    }
    targets
}

/// Strings with what breaks configuration files, and some ordinary ones (which are accepted and
/// must then render like a plain value).
fn values() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,10}",
        "[a-z0-9_]{0,6}[\n\r\t\"'#{};:=,\\[\\]\\\\ %ü€\u{7f}\u{0}-]{1,3}[a-zA-Z0-9 _.]{0,8}",
        "\\PC{1,16}",
        "[0-9]{1,3}(\n| |#|;)[a-z ]{0,10}",
    ]
}

fn check_value(target: &Target, value: &str) -> Result<(), TestCaseError> {
    let prefix = match target {
        Target::AptProxy => "http://10.0.0.1:3142/",
        _ => "",
    };
    let value = json!(format!("{prefix}{value}"));
    let Some(files) = render(target, &value) else {
        return Ok(()); // refused by check: fine
    };
    let plain_files = PLAIN.with(|cache| {
        cache
            .borrow_mut()
            .entry(target.clone())
            .or_insert_with(|| {
                render(target, &plain(target))
                    .unwrap_or_else(|| panic!("{target:?}: the plain value is refused"))
            })
            .clone()
    });
    prop_assert_eq!(
        files.keys().collect::<Vec<_>>(),
        plain_files.keys().collect::<Vec<_>>(),
        "{:?} = {}: other files",
        target,
        value
    );
    let rename = match (target, value.as_str()) {
        (Target::ParameterName, Some(name)) => Some((name, "pgstrap_fuzz")),
        _ => None,
    };
    for ((host, path), content) in &files {
        let before = &plain_files[&(host.clone(), path.clone())];
        prop_assert_eq!(
            structure(path, content, rename),
            structure(path, before, None),
            "{:?} = {} changed the structure of {} on {}:\n{}",
            target,
            value,
            path,
            host,
            content
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn a_setting_value_is_refused_or_leaves_every_file_its_structure(
        target in proptest::sample::select(targets()),
        value in values(),
    ) {
        check_value(&target, &value)?;
    }
}

#[test]
fn the_values_of_issue_11_are_refused() {
    // Each of these added lines to a generated file before settings had types.
    for (target, value) in [
        (
            Target::Setting("patroni.superuser_username".into(), Place::Cluster),
            "postgres   peer\"\n  - \"host all all 0.0.0.0/0 trust",
        ),
        (
            Target::Setting("haproxy.maxconn".into(), Place::Cluster),
            "4096\n    stats socket /tmp/s level admin",
        ),
        (
            Target::Setting("patroni.name".into(), Place::DbHost),
            "pg1\n    server evil 10.6.6.6:6432",
        ),
        (
            Target::Setting("pgbouncer.admin_users".into(), Place::Cluster),
            "postgres\nauth_type = trust",
        ),
        (
            Target::Setting("keepalived.interface".into(), Place::Balancer),
            "eth0\n    notify_master /tmp/x",
        ),
        (
            Target::Setting("etcd.auto_compaction_retention".into(), Place::Cluster),
            "1h\nETCD_FORCE_NEW_CLUSTER=true",
        ),
        (Target::ParameterName, "work_mem: 4MB\nrestapi"),
        (
            Target::AptProxy,
            "http://10.0.0.1:3142\";\nDPkg::Pre-Invoke {\"touch /tmp/x\";};//",
        ),
        (
            Target::Setting("common.packages".into(), Place::Cluster),
            "curl\nsysctls: {kernel.panic: 1}",
        ),
    ] {
        let value = match &target {
            Target::Setting(key, _) if key == "common.packages" => json!([value]),
            _ => json!(value),
        };
        assert!(
            render(&target, &value).is_none(),
            "{target:?} = {value} was accepted"
        );
    }
    // And the plain values render.
    assert!(render(&Target::ParameterName, &json!("work_mem")).is_some());
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("roles").is_dir());
}
