//! `pgstrap lab …`: parse the flags, call one function of [`crate::lab`], print the result.

use std::path::PathBuf;
use std::time::Instant;

use crate::lab;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab's state directory (inventory, SSH key, known_hosts, host disks).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "PGSTRAP_LAB_DIR",
        default_value = lab::DEFAULT_DIR
    )]
    pub dir: PathBuf,
    /// Which of the labs that run side by side on this machine this is (0–9): slot N takes the
    /// networks 10.77.2N.0/23 and names of its own, so labs in different slots (each in its own
    /// `--dir`) never touch each other. `up` keeps it in the lab's state for every later command;
    /// `down` uses it only where no state is left (a half-removed lab).
    #[arg(
        long,
        global = true,
        value_name = "N",
        env = "PGSTRAP_LAB_SLOT",
        default_value_t = 0
    )]
    pub slot: u8,
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Create the lab's hosts (or complete the lab) and write an inventory for them.
    Up {
        /// Hosts in datacenter 1 (n1…, 10.77.0.11…).
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Hosts in datacenter 2 (d1…, 10.77.1.11…).
        #[arg(long, default_value_t = 0)]
        dr_hosts: usize,
        /// Where the Debian base (and the package cache) are kept across `lab down`.
        #[arg(long, value_name = "DIR", default_value = lab::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
        /// The Debian release the hosts run: 13 (trixie, the default) or 12 (bookworm).
        #[arg(long, value_name = "RELEASE", default_value = "13")]
        release: String,
        /// Start the hosts from the preinstalled image: every package the roles install is
        /// already installed (nothing configured, enabled or started), so `apply` skips
        /// `apt-get install`. Built once per release from the bare base and cached; rebuilt when
        /// the roles' package lists change. Without it, hosts start from the bare Debian base.
        #[arg(long)]
        preinstalled: bool,
        /// Give the primary cluster backups (pgBackRest; the repository on n4, or on n3 with
        /// fewer than 5 hosts).
        #[arg(long)]
        backup: bool,
        /// Then roll out the whole stack on the lab (exactly `pgstrap apply -i <lab inventory>`),
        /// print its status and how to connect.
        #[arg(long)]
        deploy: bool,
    },
    /// Build (or find) the preinstalled image `lab up --preinstalled` starts hosts from, without
    /// starting a lab.
    Image {
        #[arg(long, value_name = "DIR", default_value = lab::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
        /// The Debian release: 13 (trixie, the default) or 12 (bookworm).
        #[arg(long, value_name = "RELEASE", default_value = "13")]
        release: String,
    },
    /// Remove everything the lab made (keeps the cached Debian base and images).
    Down,
    /// List the lab's hosts and their state.
    Status {
        /// Print JSON on stdout: `{"version": 1, "slot", "hosts": [{name, datacenter, address,
        /// state, isolated}]}` (no lab: no hosts).
        #[arg(long)]
        json: bool,
    },
    /// Shut a host down cleanly.
    Stop { host: String },
    /// Boot a stopped host again (its disk is as it was).
    Start { host: String },
    /// Cut a host's power.
    Kill { host: String },
    /// Hang a host (freeze every process).
    Freeze { host: String },
    /// Resume a frozen host.
    Thaw { host: String },
    /// Cut a host's network link.
    Isolate { host: String },
    /// Restore a host's network link.
    Heal { host: String },
}

pub fn run(args: Args, verbose: u8) -> crate::error::Result<i32> {
    let started = Instant::now();
    let dir = args.dir;
    let (host, fault) = match args.command {
        LabCommand::Up {
            hosts,
            dr_hosts,
            cache_dir,
            release,
            preinstalled,
            backup,
            deploy,
        } => {
            let options = lab::UpOptions {
                slot: lab::Slot::new(args.slot)?,
                dir,
                cache_dir,
                dc1_hosts: hosts,
                dc2_hosts: dr_hosts,
                release,
                preinstalled,
                backup,
            };
            let info = lab::up(&options)?;
            print_up(&info, started);
            if !deploy {
                return Ok(0);
            }
            return deploy_on(&info, verbose);
        }
        LabCommand::Image { cache_dir, release } => {
            let info = lab::image(&dir, &cache_dir, &release)?;
            crate::ui::eprintln(&format!(
                "lab: preinstalled Debian {release} image {} ({}) in {}: {}",
                info.root.display(),
                if info.built { "built now" } else { "cached" },
                lab::elapsed_since(started),
                info.packages.join(" ")
            ));
            return Ok(0);
        }
        LabCommand::Down => {
            let report = lab::down(&dir, lab::Slot::new(args.slot)?)?;
            crate::ui::eprintln(&format!(
                "lab: down in {}; removed {} host(s); the Debian base stays cached",
                lab::elapsed_since(started),
                report.removed_hosts.len()
            ));
            return Ok(0);
        }
        LabCommand::Status { json } => return status(&dir, json),
        LabCommand::Stop { host } => (host, lab::Fault::Stop),
        LabCommand::Start { host } => (host, lab::Fault::Start),
        LabCommand::Kill { host } => (host, lab::Fault::Kill),
        LabCommand::Freeze { host } => (host, lab::Fault::Freeze),
        LabCommand::Thaw { host } => (host, lab::Fault::Thaw),
        LabCommand::Isolate { host } => (host, lab::Fault::Isolate),
        LabCommand::Heal { host } => (host, lab::Fault::Heal),
    };
    lab::fault(&dir, &host, fault)?;
    crate::ui::eprintln(&format!(
        "lab: {host}: {} done in {}",
        format!("{fault:?}").to_lowercase(),
        lab::elapsed_since(started)
    ));
    Ok(0)
}

/// `lab status`: the lab's hosts, their state and network, as a table or JSON.
fn status(dir: &std::path::Path, json: bool) -> crate::error::Result<i32> {
    let hosts = lab::status(dir)?;
    if json {
        let hosts: Vec<serde_json::Value> = hosts
            .iter()
            .map(|h| {
                serde_json::json!({
                    "name": h.host.name,
                    "datacenter": h.host.datacenter,
                    "address": h.host.address.to_string(),
                    "state": h.state.to_string(),
                    "isolated": h.isolated,
                })
            })
            .collect();
        crate::ui::print_json(&serde_json::json!({"version": 1, "hosts": hosts}));
        return Ok(0);
    }
    if hosts.is_empty() {
        crate::ui::eprintln(&format!(
            "lab: no lab in {}; create one with `pgstrap lab up`",
            dir.display()
        ));
        return Ok(0);
    }
    crate::ui::out(&format!(
        "{:<6} {:<4} {:<12} {:<8} NETWORK\n",
        "HOST", "DC", "ADDRESS", "STATE"
    ));
    for h in hosts {
        let network = if h.isolated { "isolated" } else { "ok" };
        crate::ui::out(&format!(
            "{:<6} {:<4} {:<12} {:<8} {network}\n",
            h.host.name,
            h.host.datacenter,
            h.host.address.to_string(),
            h.state.to_string()
        ));
    }
    Ok(0)
}

/// Roll out on the lab with the same code as `pgstrap apply`, then show the status and how to
/// connect.
fn deploy_on(info: &lab::LabInfo, verbose: u8) -> crate::error::Result<i32> {
    let project = crate::project::load(&info.inventory, &[])?;
    let code = super::apply::rollout(project, Default::default(), false, verbose)?;
    if code != 0 {
        return Ok(code);
    }
    let project = crate::project::load(&info.inventory, &[])?;
    let (project, secrets) = super::running_secrets(&project)?;
    let status = super::block_on(crate::stack::status::status(&project, &secrets))?;
    crate::ui::out(&crate::ui::status_text(&status));
    let say = crate::ui::eprintln;
    for cluster in project
        .inventory
        .clusters
        .values()
        .filter(|c| c.standby_of.is_none())
    {
        let vars = project.cluster_vars(cluster);
        let (host, port) = match cluster.vip {
            Some(vip) => (
                vip.addr().to_string(),
                vars.get_u64("haproxy.write_port").unwrap_or(5000),
            ),
            None => (
                project
                    .inventory
                    .hosts
                    .get(&cluster.postgres[0])
                    .map(|h| h.address.to_string())
                    .unwrap_or_default(),
                vars.get_u64("pgbouncer.port").unwrap_or(6432),
            ),
        };
        let tls = if project.tls_enabled() {
            format!(
                " sslmode=verify-full sslrootcert={}",
                crate::tls::pki::store_dir(&project.inventory.path)
                    .join("ca.crt")
                    .display()
            )
        } else {
            String::new()
        };
        say(&format!(
            "connect: PGPASSWORD=$(sed -n 's/^superuser_password: \"\\(.*\\)\"$/\\1/p' {}) psql \"host={host} port={port} user=postgres dbname=postgres{tls}\"",
            project.inventory.secrets_store().display()
        ));
        if let Some(read) = vars
            .get_u64("haproxy.read_port")
            .filter(|_| cluster.vip.is_some())
        {
            say(&format!(
                "         (read-only, from a replica: port {read})"
            ));
        }
    }
    Ok(0)
}

fn print_up(info: &lab::LabInfo, started: Instant) {
    let say = crate::ui::eprintln;
    if !info.installed_packages.is_empty() {
        say(&format!(
            "lab: installed on this machine: {}",
            info.installed_packages.join(" ")
        ));
    }
    if !info.removed.is_empty() {
        say(&format!("lab: removed hosts {}", info.removed.join(" ")));
    }
    if !info.left_alone.is_empty() {
        say(&format!(
            "lab: already running, left alone: {}",
            info.left_alone.join(" ")
        ));
    }
    say(&format!(
        "lab: {} host(s) ready in {} ({} booted{})",
        info.hosts.len(),
        lab::elapsed_since(started),
        info.booted.len(),
        if info.base_built {
            ", Debian base built"
        } else {
            ""
        }
    ));
    if let Some((image, built)) = &info.image {
        say(&format!(
            "lab: hosts start from the preinstalled image {}{} (the stack's packages installed, \
             nothing configured or started)",
            image.display(),
            if *built { ", built now" } else { "" }
        ));
    }
    for h in &info.hosts {
        say(&format!(
            "  {:<4} {:<12} {}",
            h.name,
            h.address.to_string(),
            h.datacenter
        ));
    }
    match &info.apt_proxy {
        Some(proxy) => say(&format!("lab: package cache at {proxy}")),
        None => say("lab: no package cache (see the warning above); hosts use the mirror directly"),
    }
    say(&format!("lab: inventory   {}", info.inventory.display()));
    say(&format!("lab: known_hosts {}", info.known_hosts.display()));
    say(&format!(
        "lab: SSH key     {}",
        info.identity_file.display()
    ));
    say(&format!(
        "next: pgstrap apply -i {}",
        info.inventory.display()
    ));
    // stdout is for data: the inventory path, for scripts.
    crate::ui::out(&format!("{}\n", info.inventory.display()));
}
