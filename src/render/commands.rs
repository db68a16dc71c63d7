//! The library side of `check`, `render`, `vars` and `templates`: what each computes, without
//! printing (the `ui` module prints).

use std::path::Path;

use serde::Serialize;

use super::desired_state;
use super::engine::{self, TemplateOrigin};
use super::output::{OutputDir, WriteError};
use crate::error::{Error, Result};
use crate::inventory::diag::InventoryError;
use crate::settings::vars::Origin;

/// What `check` found.
pub struct CheckSummary {
    pub hosts: usize,
    pub clusters: usize,
    pub files: usize,
    pub warnings: Vec<InventoryError>,
}

/// Validate the inventory, the settings and every template (renders in memory; writes nothing,
/// not even generated secrets).
pub fn check(inventory: &Path, sets: &[String], release: Option<&str>) -> Result<CheckSummary> {
    let mut project = crate::project::load(inventory, sets)?;
    project.assume_release(release)?;
    let secrets = project.secrets(false)?;
    let state = desired_state(&project, &secrets, None)?;
    Ok(CheckSummary {
        hosts: state.hosts.len(),
        clusters: project.inventory.clusters.len(),
        files: state.hosts.iter().map(|h| h.files().count()).sum(),
        warnings: project.inventory.warnings.clone(),
    })
}

/// What `render` wrote.
pub struct Rendered {
    pub hosts: usize,
    pub files: usize,
    pub warnings: Vec<InventoryError>,
}

/// Render every file of every host (or `only` these) into `out/HOST/<absolute path>`.
pub fn render_to_dir(
    inventory: &Path,
    sets: &[String],
    release: Option<&str>,
    out: &Path,
    only: Option<&[String]>,
) -> Result<Rendered> {
    let mut project = crate::project::load(inventory, sets)?;
    project.assume_release(release)?;
    if let Some(names) = only {
        for name in names {
            if !project.inventory.hosts.contains_key(name) {
                return Err(Error::usage(format!("--host: unknown host `{name}`"), None));
            }
        }
    }
    let secrets = project.secrets(true)?;
    let state = desired_state(&project, &secrets, only)?;
    let mut output = OutputDir::open(out).map_err(write_error)?;
    // All or nothing: every path is checked before the first file is written.
    for host in &state.hosts {
        for file in host.files() {
            let relative = format!("{}/{}", host.host, file.path.trim_start_matches('/'));
            output.check(&relative).map_err(write_error)?;
        }
    }
    // Every check passed: what was made up is kept (the rendered files hold it).
    project.persist(&secrets)?;
    let mut files = 0;
    for host in &state.hosts {
        for file in host.files() {
            let relative = format!("{}/{}", host.host, file.path.trim_start_matches('/'));
            output
                .write(&relative, file.content.as_bytes(), file.mode)
                .map_err(write_error)?;
            files += 1;
        }
    }
    Ok(Rendered {
        hosts: state.hosts.len(),
        files,
        warnings: project.inventory.warnings.clone(),
    })
}

fn write_error(error: WriteError) -> Error {
    let message = format!("cannot write {}: {}", error.path.display(), error.message);
    if error.refused {
        Error::failure(
            format!("{message}; refusing to write through it"),
            Some("render writes only into real directories it finds or creates below DIR: remove what is in the way (a link there may redirect secrets elsewhere), or render into a new directory".into()),
        )
    } else {
        Error::failure(message, None)
    }
}

/// The settings of a host in one of its clusters.
#[derive(Debug, Serialize)]
pub struct VarsView {
    pub host: String,
    /// `None` for settings outside any cluster (the host is in no cluster).
    pub cluster: Option<String>,
    pub vars: Vec<VarEntry>,
}

#[derive(Debug, Serialize)]
pub struct VarEntry {
    pub key: String,
    pub value: serde_json::Value,
    pub origin: Origin,
}

/// Every setting of `host`, per cluster it belongs to, with where each value came from.
pub fn host_vars(
    inventory: &Path,
    sets: &[String],
    release: Option<&str>,
    host: &str,
    cluster: Option<&str>,
) -> Result<Vec<VarsView>> {
    let mut project = crate::project::load(inventory, sets)?;
    project.assume_release(release)?;
    let Some(h) = project.inventory.hosts.get(host) else {
        let known: Vec<&str> = project.inventory.hosts.keys().map(String::as_str).collect();
        return Err(Error::usage(
            format!("unknown host `{host}`"),
            Some(format!(
                "hosts in {}: {}",
                inventory.display(),
                known.join(", ")
            )),
        ));
    };
    let mut clusters: Vec<_> = project.memberships(host).map(|(c, _)| c).collect();
    if let Some(name) = cluster {
        clusters.retain(|c| c.name == name);
        if clusters.is_empty() {
            return Err(Error::usage(
                format!("host `{host}` is not in cluster `{name}`"),
                None,
            ));
        }
    }
    let view = |c: Option<&crate::inventory::Cluster>| VarsView {
        host: host.to_owned(),
        cluster: c.map(|c| c.name.clone()),
        vars: project
            .vars(h, c)
            .entries
            .into_iter()
            .map(|(key, (value, origin))| VarEntry { key, value, origin })
            .collect(),
    };
    Ok(if clusters.is_empty() {
        vec![view(None)]
    } else {
        clusters.into_iter().map(|c| view(Some(c))).collect()
    })
}

fn override_dir(inventory: Option<&Path>) -> Result<std::path::PathBuf> {
    match inventory {
        Some(path) => Ok(crate::project::load(path, &[])?
            .inventory
            .templates_dir
            .clone()),
        // No inventory: nothing overrides (a path that cannot exist).
        None => Ok(std::path::PathBuf::from("/nonexistent/pgstrap-templates")),
    }
}

/// Every template name and where the one in effect comes from.
pub fn template_list(inventory: Option<&Path>) -> Result<Vec<(String, TemplateOrigin)>> {
    let dir = override_dir(inventory)?;
    Ok(engine::builtin_templates()
        .into_iter()
        .filter_map(|name| engine::find_template(&dir, &name).map(|(_, origin)| (name, origin)))
        .collect())
}

/// The template in effect for `name` and where it came from.
pub fn template_show(inventory: Option<&Path>, name: &str) -> Result<(String, TemplateOrigin)> {
    let dir = override_dir(inventory)?;
    engine::find_template(&dir, name).ok_or_else(|| {
        Error::usage(
            format!("no template named `{name}`"),
            Some(
                "`pgstrap templates list` shows every template name (e.g. patroni/config.yml.j2)"
                    .into(),
            ),
        )
    })
}
