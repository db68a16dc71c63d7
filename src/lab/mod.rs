//! `pgstrap lab`: real systemd hosts on this machine (systemd-nspawn containers, each with its own
//! network namespace and sshd), for trying pgstrap without servers and for end-to-end tests.
//!
//! Map: [`up`], [`down`], [`status`] and [`fault`] are the API (used by `cli/lab.rs`, tests and
//! benchmarks). `base.rs` installs this machine's tools and builds the cached Debian base;
//! `net.rs` owns bridges, netns, veths, the nft egress filter and `ip_forward`; `host.rs` owns a
//! host's overlay, cgroup, supervisor and faults; `cache.rs` runs apt-cacher-ng; `image.rs`
//! builds the preinstalled image (`--preinstalled`: the stack's packages already installed);
//! `inventory.rs` names the hosts and writes the inventory; `command.rs` runs the tools.

mod base;
mod cache;
mod command;
mod host;
mod image;
mod inventory;
mod net;
mod slot;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use host::HostState;
pub use inventory::{layout, ClusterLayout, LabHost};
pub use slot::Slot;

use crate::error::{Error, Result};

pub const DEFAULT_DIR: &str = "/var/lib/pgstrap/lab";
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/pgstrap";
const STATE_FILE: &str = "lab.json";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What `lab up` builds.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The lab's state directory (inventory, keys, host layers).
    pub dir: PathBuf,
    /// Where the Debian base tarball (and the package cache) are kept across `lab down`.
    pub cache_dir: PathBuf,
    /// Hosts in datacenter 1 (`n1..`).
    pub dc1_hosts: usize,
    /// Hosts in datacenter 2 (`d1..`).
    pub dc2_hosts: usize,
    /// The Debian release the hosts run (`12` or `13`).
    pub release: String,
    /// Hosts start from the preinstalled image (every package the roles install already
    /// installed, nothing configured or started) instead of the bare base.
    pub preinstalled: bool,
    /// The primary cluster has backups (`backup: {repository: …}` in the inventory).
    pub backup: bool,
    /// Which of the labs that run side by side this is (its networks and kernel names).
    pub slot: Slot,
}

impl UpOptions {
    /// `dc1_hosts` + `dc2_hosts` hosts of the default release.
    pub fn new(dc1_hosts: usize, dc2_hosts: usize) -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            dc1_hosts,
            dc2_hosts,
            release: crate::role::releases().default.clone(),
            preinstalled: false,
            backup: false,
            slot: Slot::default(),
        }
    }

    /// The same, with hosts of `release`.
    pub fn with_release(mut self, release: &str) -> Self {
        release.clone_into(&mut self.release);
        self
    }
}

/// What `lab up` made, and where to find it.
#[derive(Debug, Clone)]
pub struct LabInfo {
    pub dir: PathBuf,
    pub inventory: PathBuf,
    pub known_hosts: PathBuf,
    pub identity_file: PathBuf,
    pub hosts: Vec<LabHost>,
    /// The package cache, when it runs (it is best-effort).
    pub apt_proxy: Option<String>,
    /// Why there is no package cache, when there is none.
    pub apt_proxy_problem: Option<String>,
    /// Hosts booted by this run.
    pub booted: Vec<String>,
    /// Hosts that were already running and were left alone.
    pub left_alone: Vec<String>,
    /// Hosts of an earlier, bigger lab that were removed.
    pub removed: Vec<String>,
    /// Whether the Debian base was built by this run (debootstrap).
    pub base_built: bool,
    /// The preinstalled image the hosts start from (`--preinstalled`), and whether this run
    /// built it.
    pub image: Option<(PathBuf, bool)>,
    /// Packages this run installed on the machine.
    pub installed_packages: Vec<String>,
}

/// One host as `lab status` sees it.
#[derive(Debug, Clone)]
pub struct HostStatus {
    pub host: LabHost,
    pub state: HostState,
    /// Its network link is cut (`lab isolate`).
    pub isolated: bool,
}

/// A fault to inject into (or remove from) one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Clean shutdown (SIGTERM to systemd-nspawn: the host's systemd halts).
    Stop,
    /// Boot a stopped host again, with its disk (upper layer) as it was.
    Start,
    /// Power cut: kill every process at once, remove its network.
    Kill,
    /// Hang: freeze every process.
    Freeze,
    /// Resume a frozen host.
    Thaw,
    /// Cut its network link.
    Isolate,
    /// Restore its network link.
    Heal,
}

/// What the lab remembers between commands (`<dir>/lab.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabState {
    hosts: Vec<LabHost>,
    base_root: PathBuf,
    cache_dir: PathBuf,
    /// The Debian release of the hosts (labs made before releases were recorded ran 12).
    #[serde(default = "release_12")]
    release: String,
    /// The lab's slot (labs made before slots ran in slot 0).
    #[serde(default)]
    slot: Slot,
}

fn release_12() -> String {
    "12".into()
}

/// Fail with exit code 2 unless running as root.
pub fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("");
    if effective_uid == "0" {
        return Ok(());
    }
    Err(Error::usage(
        "`pgstrap lab` must run as root: it creates network namespaces, bridges, nft rules, \
         overlay mounts and cgroups on this machine",
        Some("run it with sudo, e.g. `sudo pgstrap lab up`".into()),
    ))
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("inventory.yaml"),
        dir.join("known_hosts"),
        dir.join("id_ed25519"),
    )
}

/// Create the lab (or complete it): N hosts in dc1 and M in dc2, booted and reachable over SSH;
/// writes the inventory, known_hosts and key. Running hosts are left alone; leftovers of a
/// half-torn-down lab are cleared; hosts beyond the requested numbers are removed.
pub fn up(opts: &UpOptions) -> Result<LabInfo> {
    require_root()?;
    check_host_counts(opts)?;
    let releases = crate::role::releases();
    let Some(release) = releases.get(&opts.release) else {
        return Err(Error::usage(
            format!("--release: Debian `{}` is not supported", opts.release),
            Some(format!("supported releases: {}", releases.supported())),
        ));
    };
    let dir = &opts.dir;
    let slot = opts.slot;
    check_slot(dir, slot)?;
    refuse_other_release(dir, &opts.release)?;
    let packages: Vec<&str> = base::MACHINE_PACKAGES.iter().map(|(p, _)| *p).collect();
    let mut installed_packages = base::install_missing(&packages)?;
    base::create_dir(dir)?;
    let base = base::ensure_base(&opts.cache_dir, release)?;
    // The image's package list comes from the roles; a bad role fails here, before any change.
    let contents = if opts.preinstalled {
        Some(image::contents(dir, &opts.release)?)
    } else {
        None
    };
    let hosts = inventory::hosts_for(slot, opts.dc1_hosts, opts.dc2_hosts);
    let wanted_root = match &contents {
        Some(contents) => image::root(&opts.cache_dir, release, contents),
        None => base.root.clone(),
    };
    refuse_other_root(dir, &wanted_root)?;
    let public_key = ensure_key(dir)?;
    let state = LabState {
        hosts: hosts.clone(),
        base_root: wanted_root,
        cache_dir: opts.cache_dir.clone(),
        release: opts.release.clone(),
        slot,
    };
    let removed = remove_unwanted_hosts(slot, dir, &hosts)?;
    save_state(dir, &state)?;
    claim_network(slot, dir, hosts.len())?;
    let (apt_proxy, apt_proxy_problem) = start_cache(opts, &mut installed_packages);
    let image = match &contents {
        Some(contents) => Some(image::ensure(
            &opts.cache_dir,
            release,
            &base,
            contents,
            apt_proxy.as_deref(),
        )?),
        None => None,
    };

    let (left_alone, to_boot): (Vec<&LabHost>, Vec<&LabHost>) = hosts
        .iter()
        .partition(|h| host::state(slot, &h.name) != HostState::Stopped);
    for running in &left_alone {
        host::refresh_etc_hosts(dir, &hosts, &running.name)?;
    }
    let (inventory_path, known_hosts, identity_file) = paths(dir);
    let ssh = host::SshAccess {
        identity_file: &identity_file,
        known_hosts: &known_hosts,
    };
    boot(&state, dir, &to_boot, &public_key, &ssh)?;
    write_inventory(opts, &hosts, &inventory_path, &ssh, apt_proxy.as_deref())?;
    Ok(LabInfo {
        dir: dir.clone(),
        inventory: inventory_path,
        known_hosts,
        identity_file,
        hosts: hosts.clone(),
        apt_proxy,
        apt_proxy_problem,
        booted: to_boot.iter().map(|h| h.name.clone()).collect(),
        left_alone: left_alone.iter().map(|h| h.name.clone()).collect(),
        removed,
        base_built: base.built,
        image: image.map(|i| (i.root, i.built)),
        installed_packages,
    })
}

/// Refused unless each datacenter asks for 1 to the maximum hosts (and the lab for one at least).
fn check_host_counts(opts: &UpOptions) -> Result<()> {
    let max = inventory::MAX_HOSTS_PER_DATACENTER;
    if opts.dc1_hosts > max || opts.dc2_hosts > max || opts.dc1_hosts + opts.dc2_hosts == 0 {
        return Err(Error::usage(
            format!(
                "a lab needs 1 to {max} hosts per datacenter (asked for {} in dc1, {} in dc2)",
                opts.dc1_hosts, opts.dc2_hosts
            ),
            Some("e.g. `pgstrap lab up --hosts 3 --dr-hosts 3`".into()),
        ));
    }
    Ok(())
}

/// Refused while hosts of the lab run another Debian release: one lab runs one release.
fn refuse_other_release(dir: &Path, release: &str) -> Result<()> {
    if let Some(running) = load_state(dir).ok().filter(|s| s.release != release) {
        let up = running_hosts(&running);
        if !up.is_empty() {
            return Err(Error::usage(
                format!(
                    "the lab runs Debian {} ({}); asked for Debian {}",
                    running.release,
                    up.join(", "),
                    release
                ),
                Some("`pgstrap lab down` first: one lab runs one release".into()),
            ));
        }
    }
    Ok(())
}

/// Refused while hosts of the lab run from another root (base or image): one lab starts from
/// one image.
fn refuse_other_root(dir: &Path, wanted_root: &Path) -> Result<()> {
    if let Some(previous) = load_state(dir).ok().filter(|s| s.base_root != wanted_root) {
        let running = running_hosts(&previous);
        if !running.is_empty() {
            return Err(Error::usage(
                format!(
                    "the lab's running hosts ({}) started from {}; asked for {}",
                    running.join(", "),
                    describe_root(&previous.base_root),
                    describe_root(wanted_root)
                ),
                Some("`pgstrap lab down` first: one lab starts from one image".into()),
            ));
        }
    }
    Ok(())
}

/// Under the machine's lock: the slot claimed, its bridges, egress filter and forwarding, and
/// enough inotify instances for every lab host of the machine.
fn claim_network(slot: Slot, dir: &Path, new_hosts: usize) -> Result<()> {
    let _shared = net::machine_lock()?;
    slot::claim(slot, dir)?;
    net::ensure_bridges(slot)?;
    net::install_filter_and_forwarding(slot)?;
    net::raise_inotify_instances(running_lab_hosts() + new_hosts)
}

/// The package cache (apt-cacher-ng) started: its proxy URL, or (only a warning: hosts then
/// download from the mirror) why not. What it installed is added to `installed_packages`.
fn start_cache(
    opts: &UpOptions,
    installed_packages: &mut Vec<String>,
) -> (Option<String>, Option<String>) {
    match cache::ensure(opts.slot, &opts.dir, &opts.cache_dir) {
        Ok(installed) => {
            installed_packages.extend(installed);
            (Some(cache::proxy_url(opts.slot)), None)
        }
        Err(error) => {
            let problem = error.to_string();
            crate::ui::eprintln(&format!(
                "warning: the package cache (apt-cacher-ng) is not running, hosts will download \
                 from the mirror directly: {problem}"
            ));
            (None, Some(problem))
        }
    }
}

/// The stopped hosts prepared, then launched, each until it answers over SSH.
fn boot(
    state: &LabState,
    dir: &Path,
    to_boot: &[&LabHost],
    public_key: &str,
    ssh: &host::SshAccess<'_>,
) -> Result<()> {
    let slot = state.slot;
    let context = host::HostContext {
        slot,
        lab_dir: dir,
        base_root: &state.base_root,
        hosts: &state.hosts,
        authorized_key: public_key,
    };
    parallel(to_boot, |h| host::prepare(&context, h))?;
    write_known_hosts(dir, &state.hosts, ssh.known_hosts)?;
    parallel(to_boot, |h| {
        host::launch(slot, dir, h)?;
        host::wait_ready(slot, dir, h, ssh, BOOT_TIMEOUT)
    })
}

/// The lab's inventory written: its clusters' layout (with backups when asked).
fn write_inventory(
    opts: &UpOptions,
    hosts: &[LabHost],
    inventory_path: &Path,
    ssh: &host::SshAccess<'_>,
    apt_proxy: Option<&str>,
) -> Result<()> {
    let mut clusters = inventory::layout(opts.slot, opts.dc1_hosts, opts.dc2_hosts);
    if opts.backup {
        inventory::with_backup(&mut clusters);
    }
    let text = inventory::render(
        hosts,
        &clusters,
        &inventory::InventoryPaths {
            slot: opts.slot,
            identity_file: ssh.identity_file,
            known_hosts: ssh.known_hosts,
            apt_proxy,
        },
    );
    base::write(inventory_path, &text)
}

/// What `lab image` made.
pub struct ImageInfo {
    pub root: PathBuf,
    pub built: bool,
    pub packages: Vec<String>,
}

/// Build (or find) the preinstalled image of `release` without starting a lab (`lab image`): a
/// step of its own for machines that bake it ahead, e.g. before a test run.
pub fn image(work_dir: &Path, cache_dir: &Path, release: &str) -> Result<ImageInfo> {
    require_root()?;
    let releases = crate::role::releases();
    let Some(found) = releases.get(release) else {
        return Err(Error::usage(
            format!("--release: Debian `{release}` is not supported"),
            Some(format!("supported releases: {}", releases.supported())),
        ));
    };
    let contents = image::contents(work_dir, release)?;
    let packages: Vec<&str> = base::MACHINE_PACKAGES.iter().map(|(p, _)| *p).collect();
    base::install_missing(&packages)?;
    let base = base::ensure_base(cache_dir, found)?;
    let built = image::ensure(cache_dir, found, &base, &contents, None)?;
    Ok(ImageInfo {
        root: built.root,
        built: built.built,
        packages: contents.packages,
    })
}

/// Refuse a slot another lab on this machine uses (its bridge exists, and this directory's lab,
/// if any, is in another slot), and a lab directory whose running hosts are in another slot.
fn check_slot(dir: &Path, slot: Slot) -> Result<()> {
    let previous = load_state(dir).ok();
    if let Some(previous) = previous.as_ref().filter(|p| p.slot != slot) {
        let up = running_hosts(previous);
        if !up.is_empty() {
            return Err(Error::usage(
                format!(
                    "the lab in {} runs in slot {} ({}); asked for slot {slot}",
                    dir.display(),
                    previous.slot,
                    up.join(", ")
                ),
                Some("`pgstrap lab down` first, or leave out --slot".into()),
            ));
        }
    }
    let ours = previous.is_some_and(|p| p.slot == slot);
    let bridge = slot.bridge(0);
    let owner = slot::owner(slot).filter(|o| o != dir && o.join(STATE_FILE).exists());
    if let Some(owner) = owner {
        return Err(Error::usage(
            format!(
                "slot {slot} is the lab's in {} (this lab is in {})",
                owner.display(),
                dir.display()
            ),
            Some(
                "give this lab another slot (`--slot N` or PGSTRAP_LAB_SLOT), or take the other \
                 lab down first (`pgstrap lab down --dir` with its directory)"
                    .into(),
            ),
        ));
    }
    if !ours && net::link_exists(&bridge) {
        return Err(Error::usage(
            format!(
                "slot {slot} is taken by another lab on this machine (its bridge {bridge} exists) \
                 and the lab in {} is not it",
                dir.display()
            ),
            Some(
                "give this lab another slot (`--slot N` or PGSTRAP_LAB_SLOT), or take the other \
                 lab down first (`pgstrap lab down --dir` with its directory)"
                    .into(),
            ),
        ));
    }
    Ok(())
}

/// How many hosts of every lab on this machine run (for the inotify limit all share).
fn running_lab_hosts() -> usize {
    (0..=Slot::MAX)
        .filter_map(|n| Slot::new(n).ok())
        .map(|slot| host::cgroup_host_names(slot).len())
        .sum()
}

/// The hosts of a lab that are not stopped.
fn running_hosts(state: &LabState) -> Vec<&str> {
    state
        .hosts
        .iter()
        .filter(|h| host::state(state.slot, &h.name) != HostState::Stopped)
        .map(|h| h.name.as_str())
        .collect()
}

/// A lower layer as a person reads it: the bare base or the preinstalled image.
fn describe_root(root: &Path) -> String {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("stack-") {
        format!("the preinstalled image ({name})")
    } else {
        format!("the bare base ({name})")
    }
}

/// Run `job` for every host on its own thread; every host's error is reported.
fn parallel<F>(hosts: &[&LabHost], job: F) -> Result<()>
where
    F: Fn(&LabHost) -> Result<()> + Sync,
{
    let errors: Vec<Error> = std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let job = &job;
                scope.spawn(move || job(h))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| match handle.join() {
                Ok(result) => result.err(),
                Err(_) => Some(Error::failure("a lab host thread panicked", None)),
            })
            .collect()
    });
    if errors.is_empty() {
        return Ok(());
    }
    Err(Error {
        kind: crate::error::ErrorKind::Failed,
        reports: errors.into_iter().flat_map(|e| e.reports).collect(),
    })
}

/// The lab's SSH key (made once): returns the public key.
fn ensure_key(dir: &Path) -> Result<String> {
    let (_, _, key) = paths(dir);
    let public = key.with_extension("pub");
    if !key.exists() || !public.exists() {
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&public);
        command::Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "pgstrap-lab", "-f"])
            .arg(key.to_string_lossy())
            .run("ssh-keygen comes with openssh-client")?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        Error::failure(format!("could not chmod {}: {error}", key.display()), None)
    })?;
    std::fs::read_to_string(&public).map_err(|error| {
        Error::failure(
            format!("could not read {}: {error}", public.display()),
            None,
        )
    })
}

fn write_known_hosts(dir: &Path, hosts: &[LabHost], file: &Path) -> Result<()> {
    let mut text =
        String::from("# Generated by `pgstrap lab up`: the lab hosts' real sshd keys.\n");
    for h in hosts {
        for line in host::known_hosts_lines(dir, h)? {
            text.push_str(&line);
            text.push('\n');
        }
    }
    base::write(file, &text)
}

fn save_state(dir: &Path, state: &LabState) -> Result<()> {
    let text = serde_json::to_string_pretty(state)
        .map_err(|error| Error::failure(format!("could not encode lab state: {error}"), None))?;
    base::write(&dir.join(STATE_FILE), &text)
}

fn load_state(dir: &Path) -> Result<LabState> {
    let file = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&file).map_err(|error| {
        Error::usage(
            format!("no lab in {} ({}: {error})", dir.display(), file.display()),
            Some("create one with `pgstrap lab up`".into()),
        )
    })?;
    serde_json::from_str(&text).map_err(|error| {
        Error::failure(
            format!("could not read {}: {error}", file.display()),
            Some("run `pgstrap lab down` then `pgstrap lab up`".into()),
        )
    })
}

/// Names of hosts something of which exists on the machine: host directories, cgroups, netns.
fn existing_host_names(slot: Slot, dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("hosts"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.extend(host::cgroup_host_names(slot));
    names.extend(
        net::netns_list()
            .into_iter()
            .filter_map(|n| n.strip_prefix(&slot.netns_prefix()).map(String::from)),
    );
    names.extend(
        net::links()
            .into_iter()
            .filter_map(|n| n.strip_prefix(&slot.veth_prefix()).map(String::from)),
    );
    names.sort();
    names.dedup();
    names
}

/// Power off and delete hosts that exist but are not wanted.
fn remove_unwanted_hosts(slot: Slot, dir: &Path, wanted: &[LabHost]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in existing_host_names(slot, dir) {
        if wanted.iter().any(|h| h.name == name) {
            continue;
        }
        destroy_host(slot, dir, &name)?;
        removed.push(name);
    }
    Ok(removed)
}

fn destroy_host(slot: Slot, dir: &Path, name: &str) -> Result<()> {
    host::kill(slot, dir, name)?;
    let host_dir = host::paths(dir, name).dir;
    if !host::mounts_under(&host_dir).is_empty() {
        return Err(Error::failure(
            format!("{} still has mounts; not removing it", host_dir.display()),
            Some("unmount them and run the command again".into()),
        ));
    }
    if host_dir.exists() {
        std::fs::remove_dir_all(&host_dir).map_err(|error| {
            Error::failure(
                format!("could not remove {}: {error}", host_dir.display()),
                None,
            )
        })?;
    }
    Ok(())
}

/// What `lab down` removed.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    pub removed_hosts: Vec<String>,
}

/// Remove everything the lab made (hosts, their disks, netns, veths, bridges, the nft table,
/// cgroups, mounts, the package cache daemon; `ip_forward` back to its saved value when no lab
/// in another slot runs). Keeps the base cache. Idempotent.
///
/// The slot is the lab's own (from its state); `slot` is used only when no state is left (a
/// half-removed lab), and then only if no other lab directory owns that slot: a `down` of an
/// empty directory never touches another lab's hosts.
pub fn down(dir: &Path, slot: Slot) -> Result<DownReport> {
    require_root()?;
    let slot = match load_state(dir) {
        Ok(state) => state.slot,
        Err(_) => match slot::owner(slot) {
            Some(owner) if owner != dir && owner.join(STATE_FILE).exists() => {
                tracing::info!(
                    "no lab in {}; slot {slot} is the lab's in {}: left alone",
                    dir.display(),
                    owner.display()
                );
                return Ok(DownReport::default());
            }
            _ => slot,
        },
    };
    let names = existing_host_names(slot, dir);
    // Power cuts in parallel: disks are thrown away anyway.
    let refs: Vec<LabHost> = names
        .iter()
        .map(|n| LabHost {
            name: n.clone(),
            address: std::net::Ipv4Addr::UNSPECIFIED,
            datacenter: String::new(),
        })
        .collect();
    let refs: Vec<&LabHost> = refs.iter().collect();
    parallel(&refs, |h| destroy_host(slot, dir, &h.name))?;
    cache::stop(dir)?;
    {
        let _shared = net::machine_lock()?;
        net::remove_all_links(slot)?;
        net::remove_filter_and_forwarding(slot, dir)?;
        slot::release(slot, dir);
    }
    let base = host::cgroup_base(slot);
    for root in std::iter::once(&base.unified).chain(base.legacy.as_ref()) {
        host::remove_cgroup_tree(root)?;
    }
    for file in [
        "inventory.yaml",
        "known_hosts",
        "id_ed25519",
        "id_ed25519.pub",
        STATE_FILE,
    ] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let _ = std::fs::remove_dir(dir.join("hosts"));
    let _ = std::fs::remove_dir(dir);
    Ok(DownReport {
        removed_hosts: names,
    })
}

/// Every lab host and what it is doing.
/// No lab (no `<dir>/lab.json`) means no hosts.
pub fn status(dir: &Path) -> Result<Vec<HostStatus>> {
    if !dir.join(STATE_FILE).exists() {
        return Ok(Vec::new());
    }
    let state = load_state(dir)?;
    Ok(state
        .hosts
        .into_iter()
        .map(|h| HostStatus {
            state: host::state(state.slot, &h.name),
            isolated: net::is_isolated(state.slot, &h.name),
            host: h,
        })
        .collect())
}

/// The lab as drills see it: the hosts of the lab in this directory, and the faults it makes.
pub struct DrillFaults(pub PathBuf);

impl crate::stack::drill::HostFaults for DrillFaults {
    fn hosts(&self) -> Vec<(String, String)> {
        // No lab here (or none readable): it controls no host, and the drill says so.
        status(&self.0)
            .unwrap_or_default()
            .into_iter()
            .map(|l| (l.host.name, l.host.address.to_string()))
            .collect()
    }

    fn apply(&self, host: &str, fault: crate::stack::drill::HostFault) -> Result<()> {
        use crate::stack::drill::HostFault;
        let fault = match fault {
            HostFault::Kill => Fault::Kill,
            HostFault::Start => Fault::Start,
            HostFault::Isolate => Fault::Isolate,
            HostFault::Heal => Fault::Heal,
            HostFault::Freeze => Fault::Freeze,
            HostFault::Thaw => Fault::Thaw,
        };
        self::fault(&self.0, host, fault)
    }
}

/// Inject a fault into one host, or remove it.
pub fn fault(dir: &Path, name: &str, fault: Fault) -> Result<()> {
    require_root()?;
    let state = load_state(dir)?;
    let Some(target) = state.hosts.iter().find(|h| h.name == name) else {
        let known: Vec<&str> = state.hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(Error::usage(
            format!("no lab host named {name:?}"),
            Some(format!("the lab's hosts are: {}", known.join(", "))),
        ));
    };
    let slot = state.slot;
    match fault {
        Fault::Stop => host::stop(slot, dir, name, STOP_TIMEOUT),
        Fault::Kill => host::kill(slot, dir, name),
        Fault::Freeze => host::set_frozen(slot, name, true),
        Fault::Thaw => host::set_frozen(slot, name, false),
        Fault::Isolate => net::set_isolated(slot, name, true),
        Fault::Heal => net::set_isolated(slot, name, false),
        Fault::Start => start(dir, &state, target),
    }
}

fn start(dir: &Path, state: &LabState, target: &LabHost) -> Result<()> {
    let slot = state.slot;
    if host::state(slot, &target.name) != HostState::Stopped {
        return Ok(());
    }
    let public_key = ensure_key(dir)?;
    // The network may be gone after a reboot of this machine; make sure it is there.
    {
        let _shared = net::machine_lock()?;
        net::ensure_bridges(slot)?;
        net::install_filter_and_forwarding(slot)?;
    }
    let context = host::HostContext {
        slot,
        lab_dir: dir,
        base_root: &state.base_root,
        hosts: &state.hosts,
        authorized_key: &public_key,
    };
    host::prepare(&context, target)?;
    let (_, known_hosts, identity_file) = paths(dir);
    let ssh = host::SshAccess {
        identity_file: &identity_file,
        known_hosts: &known_hosts,
    };
    host::launch(slot, dir, target)?;
    host::wait_ready(slot, dir, target, &ssh, BOOT_TIMEOUT)
}

/// An `ssh` command to a lab host as root with the lab's key and strict host-key checking, for
/// tests and benchmarks: append the remote command's arguments.
pub fn ssh_command(dir: &Path, address: &str) -> std::process::Command {
    let (_, known_hosts, identity_file) = paths(dir);
    let mut command = std::process::Command::new("ssh");
    command.args(host::ssh_args(&identity_file, &known_hosts, address));
    command
}

pub use host::ssh_args;

/// How long an operation took, for the CLI's summary lines.
pub fn elapsed_since(start: Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}
