//! The preinstalled image (`lab up --preinstalled`): the Debian base with every package the
//! roles install already installed, nothing configured, enabled or started — a golden image, so
//! that labs whose subject is not the install path skip `apt-get install` on every host.
//!
//! The package list is derived from the roles (the desired state of a lab inventory that has
//! every role), never written by hand; the image is built with the engine's own apt script
//! ([`crate::ops::APT_SCRIPT`]: no service starts during the install) and the files the roles
//! write before their packages (no default PostgreSQL cluster). It is cached like the base, under
//! a name that carries a hash of what went into it, so a change of the roles' packages builds a
//! new one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::base::{self, Base};
use super::command::Cmd;
use super::host::unmount;
use super::inventory;
use crate::error::Result;

/// Lab hosts of this layout carry every role: DB hosts with etcd, balancers with a VIP, a
/// backup repository.
const LAYOUT_HOSTS: usize = 5;

/// What goes into the image of a release: the packages and the files written before them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub packages: Vec<String>,
    /// (absolute path, content) of the files the roles write before the package transaction
    /// (package-manager configuration), the apt proxy excepted.
    pub files: Vec<(String, String)>,
}

impl Contents {
    /// A short hash of everything that goes into the image, its base included.
    fn key(&self, suite: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(format!("suite {suite}\n"));
        for package in &self.packages {
            hash.update(format!("package {package}\n"));
        }
        for (path, content) in &self.files {
            hash.update(format!("file {path} {}\n", content.len()));
            hash.update(content.as_bytes());
        }
        hex::encode(&hash.finalize()[..6])
    }
}

/// Every package the roles install on any lab host of `release`, and the files they write
/// before installing, from the desired state of a lab inventory that has every role (rendered in
/// memory like `pgstrap check`: nothing is generated or written next to it but the inventory).
pub fn contents(work_dir: &Path, release: &str) -> Result<Contents> {
    let path = work_dir.join(format!("image-{release}.inventory.yaml"));
    // The addresses do not matter to what is installed: the default slot's.
    let slot = super::Slot::default();
    let mut clusters = inventory::layout(slot, LAYOUT_HOSTS, 0);
    inventory::with_backup(&mut clusters);
    let text = inventory::render(
        &inventory::hosts_for(slot, LAYOUT_HOSTS, 0),
        &clusters,
        &inventory::InventoryPaths {
            slot,
            identity_file: &work_dir.join("id_ed25519"),
            known_hosts: &work_dir.join("known_hosts"),
            apt_proxy: None,
        },
    );
    base::write(&path, &text)?;
    let rendered = (|| {
        let mut project = crate::project::load(&path, &[])?;
        project.assume_release(Some(release))?;
        let secrets = project.secrets(false)?;
        crate::render::desired_state(&project, &secrets, None)
    })();
    let _ = std::fs::remove_file(&path);
    let state = rendered?;
    let mut packages = BTreeSet::new();
    let mut files = std::collections::BTreeMap::new();
    for host in &state.hosts {
        packages.extend(host.packages());
        for role in &host.roles {
            for file in role
                .files
                .iter()
                .filter(|f| role.before_packages.contains(&f.path))
            {
                files.insert(file.path.clone(), file.content.clone());
            }
        }
    }
    Ok(Contents {
        packages: packages.into_iter().collect(),
        files: files.into_iter().collect(),
    })
}

/// Where the image of `release` with `contents` is unpacked.
pub fn root(cache_dir: &Path, release: &crate::role::Release, contents: &Contents) -> PathBuf {
    let suite = release.codename.as_str();
    cache_dir.join(format!("stack-{suite}-{}", contents.key(suite)))
}

/// Make sure the preinstalled image of `release` exists (unpacked, ready to be an overlay's
/// lower layer): use the unpacked copy; unpack the tarball; build it from `base` when neither is
/// there. Images of the same release built from other contents are removed unless a host sits on
/// them. `proxy` is the lab's package cache, used when it runs.
pub fn ensure(
    cache_dir: &Path,
    release: &crate::role::Release,
    base: &Base,
    contents: &Contents,
    proxy: Option<&str>,
) -> Result<Base> {
    let suite = release.codename.as_str();
    let key = contents.key(suite);
    let root = root(cache_dir, release, contents);
    remove_stale(cache_dir, suite, &format!("stack-{suite}-{key}"))?;
    base::cached_tree(
        &root,
        &cache_dir.join(format!("debian-{suite}-stack-{key}.tar.zst")),
        |staging| {
            crate::ui::eprintln(&format!(
                "lab: building the preinstalled {} image ({} packages; about a minute, once)",
                release.name,
                contents.packages.len()
            ));
            build(&base.root, staging, contents, proxy)
        },
    )
}

/// A copy of the base, the roles' early files written, the packages installed with the engine's
/// apt script in a chroot (nothing starts), then every unit the packages enabled disabled again:
/// each role enables and starts what it needs, and a host that has a package only because the
/// image has it runs nothing of it.
fn build(base_root: &Path, dir: &Path, contents: &Contents, proxy: Option<&str>) -> Result<()> {
    Cmd::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(format!("{}/.", base_root.display()))
        .arg(dir.to_string_lossy())
        .run("is there room in the cache directory?")?;
    for (path, content) in &contents.files {
        base::write(&dir.join(path.trim_start_matches('/')), content)?;
    }
    let before = enabled_links(dir);
    let proc_dir = dir.join("proc");
    Cmd::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(proc_dir.to_string_lossy())
        .run("mounting /proc for apt in the image")?;
    let script = "root/pgstrap-image-apt.sh";
    base::write(&dir.join(script), crate::ops::APT_SCRIPT)?;
    let mut install = Cmd::new("chroot")
        .arg(dir.to_string_lossy())
        .args(["sh", &format!("/{script}"), "1"])
        .args(&contents.packages);
    if let Some(proxy) = proxy {
        install = install.env("http_proxy", proxy);
    }
    let installed = install
        .run("apt-get install in the image needs the Debian mirror")
        .and_then(|_| {
            Cmd::new("chroot")
                .arg(dir.to_string_lossy())
                .args(["apt-get", "clean"])
                .run("apt-get clean in the image")
        });
    unmount(&proc_dir)?;
    let _ = std::fs::remove_file(dir.join(script));
    installed?;
    let units: BTreeSet<String> = enabled_links(dir)
        .difference(&before)
        .filter_map(|link| {
            Path::new(link)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .collect();
    // What `systemctl disable` does on a host (offline: the links go, deb-systemd-helper's
    // state stays, so a package upgrade keeps the unit disabled, as it keeps an admin's choice).
    if !units.is_empty() {
        Cmd::new("systemctl")
            .arg(format!("--root={}", dir.display()))
            .arg("disable")
            .args(&units)
            .run("disabling the packages' units in the image")?;
    }
    // Whatever link a unit's install section made elsewhere: none may remain.
    for link in enabled_links(dir).difference(&before) {
        let _ = std::fs::remove_file(dir.join(link));
    }
    Ok(())
}

/// The unit links under `etc/systemd/system/*.wants` and `*.requires` of an image (relative
/// paths): what is enabled.
fn enabled_links(root: &Path) -> BTreeSet<String> {
    let system = root.join("etc/systemd/system");
    let mut links = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(&system) else {
        return links;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".wants") || name.ends_with(".requires")) {
            continue;
        }
        for link in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            links.insert(format!(
                "etc/systemd/system/{name}/{}",
                link.file_name().to_string_lossy()
            ));
        }
    }
    links
}

/// Remove images of `suite` other than `keep` (tarballs, unpacked copies, markers), except an
/// unpacked copy some host's overlay still sits on.
fn remove_stale(cache_dir: &Path, suite: &str, keep: &str) -> Result<()> {
    let prefix = format!("stack-{suite}-");
    let tar_prefix = format!("debian-{suite}-stack-");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path: PathBuf = entry.path();
        if let Some(rest) = name.strip_prefix(&tar_prefix) {
            if !rest.starts_with(keep.trim_start_matches(&prefix)) {
                let _ = std::fs::remove_file(&path);
            }
        } else if name.starts_with(&prefix) && !name.starts_with(keep) {
            let root = cache_dir.join(name.trim_end_matches(".ready").trim_end_matches(".tmp"));
            if mounts.contains(&format!("lowerdir={}", root.display())) {
                continue;
            }
            if path.is_dir() {
                base::remove_tree(&path)?;
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_holds_every_package_the_roles_install_on_each_release() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for (release, postgresql) in [("13", "postgresql-17"), ("12", "postgresql-15")] {
            let contents = contents(dir.path(), release).expect("contents");
            for package in [
                postgresql,
                "patroni",
                "etcd-server",
                "etcd-client",
                "pgbouncer",
                "haproxy",
                "keepalived",
            ] {
                assert!(
                    contents.packages.iter().any(|p| p == package),
                    "Debian {release}: {package} missing from {:?}",
                    contents.packages
                );
            }
            // No default PostgreSQL cluster is created by the install; no apt proxy baked in.
            let paths: Vec<&str> = contents.files.iter().map(|(p, _)| p.as_str()).collect();
            assert_eq!(
                paths,
                ["/etc/postgresql-common/createcluster.d/00-pgstrap.conf"]
            );
            assert!(contents.files[0].1.contains("create_main_cluster = false"));
            // Nothing is left next to the work directory's files.
            assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
        }
        let a = contents(dir.path(), "13").expect("contents");
        let b = contents(dir.path(), "12").expect("contents");
        assert_ne!(a.key("trixie"), b.key("bookworm"));
        assert_eq!(a.key("trixie"), a.key("trixie"));
    }
}
