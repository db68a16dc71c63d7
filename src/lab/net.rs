//! The lab's network on this machine: one bridge per datacenter, a network namespace and veth per
//! host (fixed MACs), the nft table that lets hosts reach only the Debian mirror, and
//! `net.ipv4.ip_forward` (saved before it is turned on, restored by `lab down`).

use std::net::{Ipv4Addr, ToSocketAddrs};
use std::path::Path;

use super::command::Cmd;
use super::inventory::LabHost;
use super::slot::Slot;
use crate::error::{Error, Result};

/// The mirror the lab hosts use (the one this machine's apt sources use).
pub const MIRROR_HOST: &str = "deb.debian.org";
const FORWARD_SYSCTL: &str = "/proc/sys/net/ipv4/ip_forward";
/// The sysctls labs changed, with the values they had before the first lab: one file for the
/// machine (labs in several slots share `ip_forward`), put back by the last lab's `down`.
const SAVED_SYSCTLS: &str = "/run/pgstrap-lab-sysctls";
/// Where labs made before slots kept them (in the lab's directory): still put back.
const LEGACY_SAVED_SYSCTLS: &str = "saved-sysctls";

/// The datacenter a host's bridge belongs to: 0 for dc1, 1 for every other.
fn dc_of(host: &LabHost) -> u8 {
    u8::from(host.datacenter != "dc1")
}

pub fn netns_name(slot: Slot, host: &str) -> String {
    format!("{}{host}", slot.netns_prefix())
}

pub fn veth_name(slot: Slot, host: &str) -> String {
    format!("{}{host}", slot.veth_prefix())
}

/// A fixed, locally administered MAC derived from an address, so a rebooted host keeps its MAC
/// and neighbours' ARP caches stay right (with random MACs a reboot left a host unreachable ≈30 s).
pub fn mac_for(address: Ipv4Addr, kind: u8) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:{kind:02x}:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

const MAC_CONTAINER: u8 = 0x4c;
const MAC_HOST_SIDE: u8 = 0x4d;
const MAC_BRIDGE: u8 = 0x4b;

/// The commands that give a host a fresh network namespace with `eth0` on its datacenter bridge;
/// run by the host's supervisor before every boot.
pub fn host_network_up(slot: Slot, host: &LabHost) -> Vec<Cmd> {
    let netns = netns_name(slot, &host.name);
    let veth = veth_name(slot, &host.name);
    let dc = dc_of(host);
    let bridge = slot.bridge(dc);
    vec![
        Cmd::new("ip").args(["netns", "add", &netns]),
        Cmd::new("ip").args([
            "link",
            "add",
            &veth,
            "address",
            &mac_for(host.address, MAC_HOST_SIDE),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "address",
            &mac_for(host.address, MAC_CONTAINER),
            "netns",
            &netns,
        ]),
        Cmd::new("ip").args(["link", "set", &veth, "master", &bridge, "up"]),
        Cmd::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]),
        Cmd::new("ip").args([
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{}/24", host.address),
            "dev",
            "eth0",
        ]),
        Cmd::new("ip").args(["-n", &netns, "link", "set", "eth0", "up"]),
        Cmd::new("ip").args([
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &slot.gateway(dc).to_string(),
        ]),
    ]
}

/// The commands that remove a host's network namespace (its veth pair goes with it) and a stale
/// host-side veth; each may find nothing to remove.
pub fn host_network_down(slot: Slot, host: &str) -> Vec<Cmd> {
    vec![
        Cmd::new("ip").args(["netns", "delete", &netns_name(slot, host)]),
        Cmd::new("ip").args(["link", "delete", &veth_name(slot, host)]),
    ]
}

/// Remove a host's network now (a power-cut host must stop answering ARP at once).
pub fn remove_host_network(slot: Slot, host: &str) {
    for command in host_network_down(slot, host) {
        command.succeeds();
    }
}

/// Cut (`isolated = true`) or restore a host's link to its bridge.
pub fn set_isolated(slot: Slot, host: &str, isolated: bool) -> Result<()> {
    let veth = veth_name(slot, host);
    if !link_exists(&veth) {
        return Err(Error::failure(
            format!("lab host {host} has no network link ({veth}): it is not running"),
            Some(format!("start it first: pgstrap lab start {host}")),
        ));
    }
    let state = if isolated { "down" } else { "up" };
    Cmd::new("ip")
        .args(["link", "set", &veth, state])
        .run("check `ip link` on this machine")?;
    Ok(())
}

/// Whether a host's link is cut: its veth exists and is administratively down.
pub fn is_isolated(slot: Slot, host: &str) -> bool {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{}/flags", veth_name(slot, host)));
    match flags {
        Ok(text) => {
            let value = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).unwrap_or(1);
            value & 1 == 0
        }
        Err(_) => false,
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Names of this machine's network links.
pub fn links() -> Vec<String> {
    dir_names("/sys/class/net")
}

/// Names of the named network namespaces (`ip netns add`).
pub fn netns_list() -> Vec<String> {
    dir_names("/run/netns")
}

/// The entries of a directory by name (none when it does not exist).
fn dir_names(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Create both datacenter bridges with their gateway addresses (or leave them as they are).
pub fn ensure_bridges(slot: Slot) -> Result<()> {
    for dc in 0..2 {
        let bridge = slot.bridge(dc);
        let gateway = slot.gateway(dc);
        if !link_exists(&bridge) {
            Cmd::new("ip")
                .args([
                    "link",
                    "add",
                    &bridge,
                    "address",
                    &mac_for(gateway, MAC_BRIDGE),
                    "type",
                    "bridge",
                ])
                .run("is the `bridge` kernel module available? check `ip link`")?;
        }
        Cmd::new("ip")
            .args(["addr", "replace", &format!("{gateway}/24"), "dev", &bridge])
            .run(&format!(
                "check `ip addr` on this machine; another network may use {}",
                slot.range()
            ))?;
        Cmd::new("ip")
            .args(["link", "set", &bridge, "up"])
            .run("check `ip link` on this machine")?;
    }
    Ok(())
}

/// The Debian mirror's IPv4 addresses (a name lookup; nothing is connected to).
pub fn mirror_addresses() -> Result<Vec<Ipv4Addr>> {
    let mut addresses: Vec<Ipv4Addr> = (MIRROR_HOST, 80)
        .to_socket_addrs()
        .map_err(|error| {
            Error::failure(
                format!("could not resolve the Debian mirror {MIRROR_HOST}: {error}"),
                Some("lab hosts may reach only the mirror; check /etc/resolv.conf".into()),
            )
        })?
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(Error::failure(
            format!("the Debian mirror {MIRROR_HOST} has no IPv4 address"),
            Some("lab hosts have IPv4 only; check this machine's DNS".into()),
        ));
    }
    Ok(addresses)
}

/// The machine's IPv4 name servers that lab hosts can use (loopback ones cannot be reached from
/// a host's namespace).
pub fn dns_servers() -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_nameservers(&text)
}

fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|word| word.parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

fn address_set(addresses: &[Ipv4Addr]) -> String {
    let items: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The lab's nft table. FORWARD: lab↔lab, multicast/broadcast (VRRP), replies, the mirror on
/// tcp 80/443 and the name servers on 53 are accepted; everything else to or from the lab is
/// dropped (counted, so tests read counters instead of connecting out). `br_netfilter` sends even
/// bridged host-to-host traffic through FORWARD, hence the explicit lab↔lab rule. INPUT: hosts
/// reach this machine only for replies, ping and the package cache (3142).
pub fn ruleset(slot: Slot, mirrors: &[Ipv4Addr], dns: &[Ipv4Addr]) -> String {
    let lab = slot.range();
    let lab = lab.as_str();
    let mut forward = vec![
        "type filter hook forward priority filter; policy accept;".to_string(),
        format!("ip saddr {lab} ip daddr {lab} accept"),
        format!("ip daddr {lab} ct state established,related accept"),
        format!("ip saddr {lab} ip daddr {{ 224.0.0.0/4, 255.255.255.255 }} accept"),
    ];
    if !mirrors.is_empty() {
        forward.push(format!(
            "ip saddr {lab} ip daddr {} tcp dport {{ 80, 443 }} accept",
            address_set(mirrors)
        ));
    }
    if !dns.is_empty() {
        for protocol in ["udp", "tcp"] {
            forward.push(format!(
                "ip saddr {lab} ip daddr {} {protocol} dport 53 accept",
                address_set(dns)
            ));
        }
    }
    forward.push(format!(
        "ip saddr {lab} counter drop comment \"lab egress\""
    ));
    forward.push(format!(
        "ip daddr {lab} counter drop comment \"lab ingress\""
    ));
    let input = [
        "type filter hook input priority filter; policy accept;".to_string(),
        format!("ip saddr {lab} ct state established,related accept"),
        format!("ip saddr {lab} tcp dport 3142 accept"),
        format!("ip saddr {lab} icmp type echo-request accept"),
        format!("ip saddr {lab} ip daddr {{ 224.0.0.0/4, 255.255.255.255 }} accept"),
        format!("ip saddr {lab} counter drop comment \"lab to this machine\""),
    ];
    let postrouting = [
        "type nat hook postrouting priority srcnat; policy accept;".to_string(),
        format!("ip saddr {lab} ip daddr != {lab} masquerade"),
    ];
    let chain = |name: &str, rules: &[String]| {
        let body: Vec<String> = rules.iter().map(|r| format!("\t\t{r}\n")).collect();
        format!("\tchain {name} {{\n{}\t}}\n", body.concat())
    };
    // Declaring then deleting the table first makes the load an atomic replace, whether or not
    // a (stale) table exists.
    let table = slot.nft_table();
    format!(
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n{}{}{}}}\n",
        chain("forward", &forward),
        chain("input", &input),
        chain("postrouting", &postrouting),
    )
}

fn read_forward() -> Result<String> {
    std::fs::read_to_string(FORWARD_SYSCTL)
        .map(|s| s.trim().to_string())
        .map_err(|error| {
            Error::failure(
                format!("could not read {FORWARD_SYSCTL}: {error}"),
                Some("the lab needs IPv4 forwarding".into()),
            )
        })
}

fn write_forward(value: &str) -> Result<()> {
    std::fs::write(FORWARD_SYSCTL, value).map_err(|error| {
        Error::failure(
            format!("could not write {value} to {FORWARD_SYSCTL}: {error}"),
            Some("run as root".into()),
        )
    })
}

/// The machine-wide lock every lab takes while it changes what labs share (`ip_forward`, the
/// kept sysctls, which lab is the last): two labs coming up or going down at the same moment
/// would otherwise both keep "the value before the first lab" (one of them the other's 1), or
/// both think another lab remains. Held until the returned file is dropped.
pub fn machine_lock() -> Result<std::fs::File> {
    const LOCK: &str = "/run/pgstrap-lab.lock";
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(|error| {
            Error::failure(
                format!("could not open {LOCK}: {error}"),
                Some("run as root".into()),
            )
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|error| Error::failure(format!("could not lock {LOCK}: {error}"), None))?;
    Ok(file)
}

/// Load the egress filter, and only then turn on forwarding: with forwarding on and no filter,
/// lab hosts' packets would leave the machine unfiltered. The old `ip_forward` is saved once for
/// the machine (a second `up`, or a lab in another slot, must not save the labs' own 1).
pub fn install_filter_and_forwarding(slot: Slot) -> Result<()> {
    save_sysctl("net.ipv4.ip_forward", &read_forward()?)?;
    let rules = ruleset(slot, &mirror_addresses()?, &dns_servers());
    let loaded = Cmd::new("nft")
        .args(["-f", "-"])
        .input(rules)
        .run("is nftables installed? the rules are in `pgstrap lab` src/lab/net.rs");
    if let Err(error) = loaded {
        // Never leave forwarding on without the filter (unless another lab's filter holds it).
        if other_lab_tables(slot).is_empty() {
            if let Some(old) = saved_sysctls(None).get("net.ipv4.ip_forward") {
                let _ = write_forward(old);
            }
        }
        return Err(error);
    }
    write_forward("1")
}

/// Keep a sysctl's value from before the first lab, unless one is kept already.
fn save_sysctl(key: &str, value: &str) -> Result<()> {
    let text = std::fs::read_to_string(SAVED_SYSCTLS).unwrap_or_default();
    if text.lines().any(|l| l.starts_with(&format!("{key}="))) {
        return Ok(());
    }
    std::fs::write(SAVED_SYSCTLS, format!("{text}{key}={value}\n")).map_err(|error| {
        Error::failure(
            format!("could not write {SAVED_SYSCTLS}: {error}"),
            Some("run as root".into()),
        )
    })
}

/// The sysctls kept before the first lab (and, from a lab made before slots, in its `dir`).
fn saved_sysctls(dir: Option<&Path>) -> std::collections::BTreeMap<String, String> {
    let legacy = dir.map(|d| d.join(LEGACY_SAVED_SYSCTLS));
    [Some(Path::new(SAVED_SYSCTLS).to_path_buf()), legacy]
        .into_iter()
        .flatten()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect::<Vec<_>>()
        })
        .rev()
        .collect()
}

/// Make sure the kernel allows enough inotify instances for `hosts` more systemd containers
/// (each systemd takes a few; the usual default of 128 stops at about 50 hosts with "Too many
/// open files"). The old value is kept beside `ip_forward` and put back by the last `lab down`.
pub fn raise_inotify_instances(hosts: usize) -> Result<()> {
    const KEY: &str = "fs.inotify.max_user_instances";
    let path = "/proc/sys/fs/inotify/max_user_instances";
    let current: usize = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(128);
    let wanted = 128 + 8 * hosts;
    if current >= wanted {
        return Ok(());
    }
    save_sysctl(KEY, &current.to_string())?;
    std::fs::write(path, wanted.to_string()).map_err(|error| {
        Error::failure(
            format!("could not raise {KEY} to {wanted}: {error}"),
            Some("run as root".into()),
        )
    })
}

/// Remove this lab's nft table; when it was the last lab on the machine, put `ip_forward` back
/// (first, so nothing is forwarded unfiltered) and every other kept sysctl. Called once the
/// lab's hosts and links are gone, so nothing of this lab is forwarded while other labs keep
/// forwarding on.
pub fn remove_filter_and_forwarding(slot: Slot, dir: &Path) -> Result<()> {
    if other_lab_tables(slot).is_empty() {
        let saved = saved_sysctls(Some(dir));
        if let Some(old) = saved.get("net.ipv4.ip_forward") {
            write_forward(old)?;
        }
        for (key, value) in &saved {
            if key != "net.ipv4.ip_forward" {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                let _ = std::fs::write(path, value);
            }
        }
        let _ = std::fs::remove_file(SAVED_SYSCTLS);
    }
    let _ = std::fs::remove_file(dir.join(LEGACY_SAVED_SYSCTLS));
    if nft_table_exists(slot) {
        Cmd::new("nft")
            .args(["delete", "table", "inet", &slot.nft_table()])
            .run("check `nft list tables`")?;
    }
    Ok(())
}

pub fn nft_table_exists(slot: Slot) -> bool {
    Cmd::new("nft")
        .args(["list", "table", "inet", &slot.nft_table()])
        .succeeds()
}

/// The nft tables of labs in other slots that run on this machine.
pub fn other_lab_tables(slot: Slot) -> Vec<String> {
    let listing = Cmd::new("nft")
        .args(["list", "tables"])
        .capture()
        .map(|(_, stdout, _)| stdout)
        .unwrap_or_default();
    super::slot::lab_tables(&listing)
        .into_iter()
        .filter(|t| *t != slot.nft_table())
        .collect()
}

/// Remove every netns, veth and bridge of this lab still on this machine.
pub fn remove_all_links(slot: Slot) -> Result<()> {
    for netns in netns_list() {
        if netns.starts_with(&slot.netns_prefix()) {
            Cmd::new("ip")
                .args(["netns", "delete", &netns])
                .run("check `ip netns list`")?;
        }
    }
    for link in links() {
        if link.starts_with(&slot.veth_prefix()) || link.starts_with(&slot.bridge_prefix()) {
            Cmd::new("ip")
                .args(["link", "delete", &link])
                .run("check `ip link`")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_fixed_per_address_and_side() {
        let a = Ipv4Addr::new(10, 77, 0, 11);
        assert_eq!(mac_for(a, MAC_CONTAINER), "02:4c:0a:4d:00:0b");
        assert_ne!(mac_for(a, MAC_CONTAINER), mac_for(a, MAC_HOST_SIDE));
    }

    #[test]
    fn nameservers_skip_loopback_and_ipv6() {
        let text = "# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n";
        assert_eq!(parse_nameservers(text), [Ipv4Addr::new(10, 255, 255, 53)]);
    }

    #[test]
    fn ruleset_drops_everything_but_the_mirror_and_dns() {
        let rules = ruleset(
            Slot::default(),
            &[Ipv4Addr::new(203, 0, 113, 80)],
            &[Ipv4Addr::new(10, 255, 255, 53)],
        );
        assert!(rules.starts_with("table inet pgstrap_lab\ndelete table inet pgstrap_lab\n"));
        assert!(rules.contains(
            "ip saddr 10.77.0.0/23 ip daddr { 203.0.113.80 } tcp dport { 80, 443 } accept"
        ));
        assert!(
            rules.contains("ip saddr 10.77.0.0/23 ip daddr { 10.255.255.53 } udp dport 53 accept")
        );
        let egress = rules.find("counter drop comment \"lab egress\"");
        let mirror = rules.find("tcp dport { 80, 443 } accept");
        assert!(mirror < egress, "accepts come before the drop");
        assert!(rules.contains("masquerade"));
    }

    #[test]
    fn ruleset_without_dns_has_no_empty_set() {
        let rules = ruleset(
            Slot::new(1).expect("slot 1"),
            &[Ipv4Addr::new(203, 0, 113, 80)],
            &[],
        );
        assert!(rules.contains("ip saddr 10.77.2.0/23 ip daddr 10.77.2.0/23 accept"));
        assert!(!rules.contains("{  }"));
        assert!(!rules.contains("dport 53"));
    }
}
