//! This machine's prerequisites (tools installed with apt when missing, never removed) and the
//! Debian base every lab host's overlay sits on, one per release (12 bookworm, 13 trixie): built
//! with debootstrap once, cached as a tarball, unpacked next to it.

use std::path::{Path, PathBuf};

use super::command::Cmd;
use super::host::{mounts_under, unmount};
use crate::error::{Error, Result};

pub const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const INCLUDE: &str = "systemd,systemd-sysv,dbus,openssh-server,iproute2,iputils-ping,procps,\
sudo,ca-certificates,curl,python3,gnupg,netbase";

/// The packages the lab needs on this machine, each with a file that proves it is there.
pub const MACHINE_PACKAGES: [(&str, &str); 6] = [
    ("systemd-container", "/usr/bin/systemd-nspawn"),
    ("debootstrap", "/usr/sbin/debootstrap"),
    ("nftables", "/usr/sbin/nft"),
    ("zstd", "/usr/bin/zstd"),
    ("openssh-client", "/usr/bin/ssh-keygen"),
    ("iproute2", "/usr/sbin/ip"),
];

/// Whether a Debian package is installed here.
pub fn package_installed(package: &str) -> bool {
    Cmd::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .run("")
        .map(|status| status.trim() == "install ok installed")
        .unwrap_or(false)
}

/// Install with apt whichever of `packages` are missing; returns the ones installed now. Nothing
/// is ever removed (purging shared libraries cascades into packages the machine needs).
pub fn install_missing(packages: &[&str]) -> Result<Vec<String>> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    crate::ui::eprintln(&format!("lab: installing {} with apt", missing.join(" ")));
    let install = || {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .run("check this machine's apt sources and `apt-get install` by hand")
    };
    if install().is_err() {
        // Stale package lists are the usual cause; refresh once and retry.
        Cmd::new("apt-get")
            .args(["update"])
            .run("check this machine's apt sources")?;
        install()?;
    }
    Ok(missing.iter().map(|s| s.to_string()).collect())
}

/// The unpacked base, ready to be an overlay's lower layer.
pub struct Base {
    pub root: PathBuf,
    /// Whether debootstrap ran now (a cold start).
    pub built: bool,
}

/// Make sure the base exists: use the unpacked copy; unpack the tarball when only it is there;
/// run debootstrap only when both are missing. The unpacked copy is never replaced while it
/// exists, because running hosts' overlays sit on it.
pub fn ensure_base(cache_dir: &Path, release: &crate::role::Release) -> Result<Base> {
    let suite = release.codename.as_str();
    create_dir(cache_dir)?;
    cached_tree(
        &cache_dir.join(format!("base-{suite}")),
        &cache_dir.join(format!("debian-{suite}-base.tar.zst")),
        |staging| {
            crate::ui::eprintln(&format!(
                "lab: building the {} base with debootstrap (about a minute)",
                release.name
            ));
            build(staging, suite)
        },
    )
}

/// A tree cached as a tarball and unpacked next to it (a base, an image): the unpacked copy
/// when it is complete (`ROOT.ready`); else the tarball unpacked; else `build` into a staging
/// directory, packed. The unpacked copy is only ever replaced whole, by a rename.
pub(crate) fn cached_tree(
    root: &Path,
    tarball: &Path,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<Base> {
    let name = root.to_string_lossy();
    let ready_marker = PathBuf::from(format!("{name}.ready"));
    if root.is_dir() && ready_marker.exists() {
        if !tarball.exists() {
            pack(root, tarball)?;
        }
        return Ok(Base {
            root: root.to_path_buf(),
            built: false,
        });
    }
    let staging = PathBuf::from(format!("{name}.tmp"));
    remove_tree(&staging)?;
    create_dir(&staging)?;
    let built = if tarball.exists() {
        unpack(tarball, &staging)?;
        false
    } else {
        build(&staging)?;
        pack(&staging, tarball)?;
        true
    };
    remove_tree(root)?;
    std::fs::rename(&staging, root).map_err(|error| {
        Error::failure(
            format!(
                "could not move {} to {}: {error}",
                staging.display(),
                root.display()
            ),
            None,
        )
    })?;
    write(&ready_marker, "")?;
    Ok(Base {
        root: root.to_path_buf(),
        built,
    })
}

fn build(dir: &Path, suite: &str) -> Result<()> {
    let path = dir.to_string_lossy();
    Cmd::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), suite])
        .arg(&path)
        .arg(MIRROR)
        .run(
            "debootstrap needs the Debian mirror; see debootstrap/debootstrap.log in the target",
        )?;
    let sources = format!(
        "deb {MIRROR} {suite} main\ndeb {MIRROR} {suite}-updates main\n\
         deb {SECURITY_MIRROR} {suite}-security main\n"
    );
    write(&dir.join("etc/apt/sources.list"), &sources)?;
    // Each host gets its own keys and machine id; an empty machine-id file lets systemd boot.
    for entry in read_dir(&dir.join("etc/ssh"))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    write(&dir.join("etc/machine-id"), "")?;
    let _ = std::fs::remove_file(dir.join("var/lib/dbus/machine-id"));
    // Units that make no sense in a lab host: apt timers would race the engine's apt runs,
    // console-getty spins on the console, networkd would fight the address given from outside.
    for unit in [
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "console-getty.service",
        "systemd-networkd.service",
        "systemd-networkd.socket",
        "systemd-networkd-wait-online.service",
    ] {
        let link = dir.join("etc/systemd/system").join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).map_err(|error| {
            Error::failure(format!("could not mask {unit} in the base: {error}"), None)
        })?;
    }
    write(
        &dir.join("etc/ssh/sshd_config.d/pgstrap-lab.conf"),
        "# Generated by `pgstrap lab`: keys only.\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
    )?;
    std::fs::copy("/etc/resolv.conf", dir.join("etc/resolv.conf")).map_err(|error| {
        Error::failure(
            format!("could not copy /etc/resolv.conf into the base: {error}"),
            None,
        )
    })?;
    let proc_dir = dir.join("proc");
    Cmd::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(proc_dir.to_string_lossy())
        .run("mounting /proc for apt in the base")?;
    let updated = Cmd::new("chroot")
        .arg(&path)
        .args(["apt-get", "update"])
        .run("apt-get update in the base needs the Debian mirror")
        .and_then(|_| {
            Cmd::new("chroot")
                .arg(&path)
                .args(["apt-get", "clean"])
                .run("apt-get clean in the base")
        });
    unmount(&proc_dir)?;
    updated?;
    Ok(())
}

/// Unpack a cached tarball (a base or an image) into `dir`.
pub(crate) fn unpack(tarball: &Path, dir: &Path) -> Result<()> {
    crate::ui::eprintln(&format!("lab: unpacking {}", tarball.display()));
    Cmd::new("tar")
        .args(["--zstd", "--numeric-owner", "--xattrs", "-xpf"])
        .arg(tarball.to_string_lossy())
        .arg("-C")
        .arg(dir.to_string_lossy())
        .run(&format!(
            "the cached tarball may be damaged: remove {} and run `pgstrap lab up` again",
            tarball.display()
        ))
        .map(|_| ())
}

pub(crate) fn pack(root: &Path, tarball: &Path) -> Result<()> {
    let partial = tarball.with_extension("zst.partial");
    Cmd::new("tar")
        .args(["--zstd", "--numeric-owner", "--xattrs", "-cpf"])
        .arg(partial.to_string_lossy())
        .arg("-C")
        .arg(root.to_string_lossy())
        .arg(".")
        .run("is zstd installed? is there room in the cache directory?")?;
    std::fs::rename(&partial, tarball).map_err(|error| {
        Error::failure(
            format!("could not move {} into place: {error}", partial.display()),
            None,
        )
    })
}

/// Remove a directory tree, first unmounting anything left mounted inside it (a debootstrap
/// that was interrupted leaves /proc and /sys mounted in its target).
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for mount in mounts_under(dir).into_iter().rev() {
        unmount(&mount)?;
    }
    std::fs::remove_dir_all(dir).map_err(|error| {
        Error::failure(
            format!("could not remove {}: {error}", dir.display()),
            Some("remove it by hand".into()),
        )
    })
}

pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|error| {
        Error::failure(
            format!("could not create {}: {error}", dir.display()),
            Some("run as root".into()),
        )
    })
}

pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(path, text).map_err(|error| {
        Error::failure(format!("could not write {}: {error}", path.display()), None)
    })
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    Ok(std::fs::read_dir(dir)
        .map_err(|error| {
            Error::failure(format!("could not read {}: {error}", dir.display()), None)
        })?
        .filter_map(|e| e.ok())
        .collect())
}
