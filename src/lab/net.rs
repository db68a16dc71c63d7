//! The lab's network on this machine: one bridge per datacenter, a network namespace and veth per
//! host (fixed MACs), the nft table that lets hosts reach only the Debian mirror, and
//! `net.ipv4.ip_forward` (saved before it is turned on, restored by `lab down`).

use std::net::{Ipv4Addr, ToSocketAddrs};
use std::path::Path;

use super::command::Cmd;
use super::inventory::LabHost;
use crate::error::{Error, Result};

/// Both datacenters' networks in one prefix: every lab address is inside it.
pub const LAB_RANGE: &str = "10.77.0.0/23";
/// The nft table (family inet) that holds the lab's egress filter and NAT.
pub const NFT_TABLE: &str = "pgstrap_lab";
/// The mirror the lab hosts use (the one this machine's apt sources use).
pub const MIRROR_HOST: &str = "deb.debian.org";
const FORWARD_SYSCTL: &str = "/proc/sys/net/ipv4/ip_forward";
const SAVED_SYSCTLS: &str = "saved-sysctls";
/// Names of host-side veths start with this; bridges with [`BRIDGE_PREFIX`]; netns with
/// [`NETNS_PREFIX`].
pub const VETH_PREFIX: &str = "pgl-";
pub const BRIDGE_PREFIX: &str = "pglab-dc";
pub const NETNS_PREFIX: &str = "pglab-";

/// One datacenter's bridge.
pub struct Bridge {
    pub name: &'static str,
    pub gateway: Ipv4Addr,
}

pub const BRIDGES: [Bridge; 2] = [
    Bridge {
        name: "pglab-dc1",
        gateway: Ipv4Addr::new(10, 77, 0, 1),
    },
    Bridge {
        name: "pglab-dc2",
        gateway: Ipv4Addr::new(10, 77, 1, 1),
    },
];

/// The bridge a host's datacenter hangs on (dc1 → the first, everything else → the second).
pub fn bridge_of(host: &LabHost) -> &'static Bridge {
    if host.datacenter == "dc1" {
        &BRIDGES[0]
    } else {
        &BRIDGES[1]
    }
}

pub fn netns_name(host: &str) -> String {
    format!("{NETNS_PREFIX}{host}")
}

pub fn veth_name(host: &str) -> String {
    format!("{VETH_PREFIX}{host}")
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
pub fn host_network_up(host: &LabHost) -> Vec<Cmd> {
    let netns = netns_name(&host.name);
    let veth = veth_name(&host.name);
    let bridge = bridge_of(host);
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
        Cmd::new("ip").args(["link", "set", &veth, "master", bridge.name, "up"]),
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
            &bridge.gateway.to_string(),
        ]),
    ]
}

/// The commands that remove a host's network namespace (its veth pair goes with it) and a stale
/// host-side veth; each may find nothing to remove.
pub fn host_network_down(host: &str) -> Vec<Cmd> {
    vec![
        Cmd::new("ip").args(["netns", "delete", &netns_name(host)]),
        Cmd::new("ip").args(["link", "delete", &veth_name(host)]),
    ]
}

/// Remove a host's network now (a power-cut host must stop answering ARP at once).
pub fn remove_host_network(host: &str) {
    for command in host_network_down(host) {
        command.succeeds();
    }
}

/// Cut (`isolated = true`) or restore a host's link to its bridge.
pub fn set_isolated(host: &str, isolated: bool) -> Result<()> {
    let veth = veth_name(host);
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
pub fn is_isolated(host: &str) -> bool {
    let flags = std::fs::read_to_string(format!("/sys/class/net/{}/flags", veth_name(host)));
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
pub fn ensure_bridges() -> Result<()> {
    for bridge in &BRIDGES {
        if !link_exists(bridge.name) {
            Cmd::new("ip")
                .args([
                    "link",
                    "add",
                    bridge.name,
                    "address",
                    &mac_for(bridge.gateway, MAC_BRIDGE),
                    "type",
                    "bridge",
                ])
                .run("is the `bridge` kernel module available? check `ip link`")?;
        }
        Cmd::new("ip")
            .args([
                "addr",
                "replace",
                &format!("{}/24", bridge.gateway),
                "dev",
                bridge.name,
            ])
            .run("check `ip addr` on this machine; another network may use 10.77.0.0/23")?;
        Cmd::new("ip")
            .args(["link", "set", bridge.name, "up"])
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
pub fn ruleset(mirrors: &[Ipv4Addr], dns: &[Ipv4Addr]) -> String {
    let lab = LAB_RANGE;
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
    format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n{}{}{}}}\n",
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

/// Load the egress filter, and only then turn on forwarding: with forwarding on and no filter,
/// lab hosts' packets would leave the machine unfiltered. The old `ip_forward` is saved once (a
/// second `up` must not save the lab's own 1) in `<dir>/saved-sysctls`.
pub fn install_filter_and_forwarding(dir: &Path) -> Result<()> {
    let saved = dir.join(SAVED_SYSCTLS);
    if !saved.exists() {
        let old = read_forward()?;
        std::fs::write(&saved, format!("net.ipv4.ip_forward={old}\n")).map_err(|error| {
            Error::failure(
                format!("could not write {}: {error}", saved.display()),
                None,
            )
        })?;
    }
    let rules = ruleset(&mirror_addresses()?, &dns_servers());
    let loaded = Cmd::new("nft")
        .args(["-f", "-"])
        .input(rules)
        .run("is nftables installed? the rules are in `pgstrap lab` src/lab/net.rs");
    if let Err(error) = loaded {
        // Never leave forwarding on without the filter.
        if let Some(old) = saved_forward(dir) {
            let _ = write_forward(&old);
        }
        return Err(error);
    }
    write_forward("1")
}

/// Make sure the kernel allows enough inotify instances for `hosts` systemd containers (each
/// systemd takes a few; the usual default of 128 stops at about 50 hosts with "Too many open
/// files"). The old value is saved beside `ip_forward` and restored by `lab down`.
pub fn raise_inotify_instances(dir: &Path, hosts: usize) -> Result<()> {
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
    let saved = dir.join(SAVED_SYSCTLS);
    let text = std::fs::read_to_string(&saved).unwrap_or_default();
    if !text.lines().any(|l| l.starts_with(&format!("{KEY}="))) {
        std::fs::write(&saved, format!("{text}{KEY}={current}\n")).map_err(|error| {
            Error::failure(
                format!("could not write {}: {error}", saved.display()),
                None,
            )
        })?;
    }
    std::fs::write(path, wanted.to_string()).map_err(|error| {
        Error::failure(
            format!("could not raise {KEY} to {wanted}: {error}"),
            Some("run as root".into()),
        )
    })
}

/// Put back every saved sysctl other than `ip_forward` (which goes first, with the filter).
fn restore_other_sysctls(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join(SAVED_SYSCTLS)) else {
        return;
    };
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            if key != "net.ipv4.ip_forward" {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                let _ = std::fs::write(path, value.trim());
            }
        }
    }
}

fn saved_forward(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(SAVED_SYSCTLS)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("net.ipv4.ip_forward="))
        .map(|v| v.trim().to_string())
}

/// Restore `ip_forward` to its saved value (first, so nothing is forwarded unfiltered), then
/// remove the nft table.
pub fn remove_filter_and_forwarding(dir: &Path) -> Result<()> {
    if let Some(old) = saved_forward(dir) {
        write_forward(&old)?;
    }
    restore_other_sysctls(dir);
    let _ = std::fs::remove_file(dir.join(SAVED_SYSCTLS));
    if nft_table_exists() {
        Cmd::new("nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .run("check `nft list tables`")?;
    }
    Ok(())
}

pub fn nft_table_exists() -> bool {
    Cmd::new("nft")
        .args(["list", "table", "inet", NFT_TABLE])
        .succeeds()
}

/// Remove every lab netns, veth and bridge still on this machine.
pub fn remove_all_links() -> Result<()> {
    for netns in netns_list() {
        if netns.starts_with(NETNS_PREFIX) {
            Cmd::new("ip")
                .args(["netns", "delete", &netns])
                .run("check `ip netns list`")?;
        }
    }
    for link in links() {
        if link.starts_with(VETH_PREFIX) || link.starts_with(BRIDGE_PREFIX) {
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
        let rules = ruleset(&[Ipv4Addr::new(203, 0, 113, 80)], &[]);
        assert!(!rules.contains("{  }"));
        assert!(!rules.contains("dport 53"));
    }
}
