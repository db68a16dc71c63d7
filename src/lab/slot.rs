//! Which lab of the ones that run side by side on one machine: a slot (0–9) gives a lab its own
//! networks and the names of everything it makes in the kernel (bridges, network namespaces,
//! veths, cgroups, the nft table, nspawn machine names), so two labs never touch each other's.
//! Slot 0 is the default lab and keeps the names and addresses labs always had (10.77.0.0/23);
//! slot N takes 10.77.2N.0/23 and puts N into every name.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A lab's slot (0–9): see the module's text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slot(u8);

impl Slot {
    /// The highest slot: names stay within the kernel's 15 bytes (`pgl9-n200`).
    pub const MAX: u8 = 9;

    pub fn new(number: u8) -> Result<Self> {
        if number > Self::MAX {
            return Err(Error::usage(
                format!("--slot {number}: a lab slot is 0 to {}", Self::MAX),
                Some("slot 0 is the default lab; use another to run a second lab beside it".into()),
            ));
        }
        Ok(Self(number))
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// What slot N adds to every name: nothing for slot 0.
    fn tag(self) -> String {
        if self.0 == 0 {
            String::new()
        } else {
            self.0.to_string()
        }
    }

    /// The third octet of datacenter `dc`'s network (0 for dc1, 1 for dc2).
    fn third(self, dc: u8) -> u8 {
        2 * self.0 + dc
    }

    /// Both datacenters' networks in one prefix: every address of this lab is inside it.
    pub fn range(self) -> String {
        format!("10.77.{}.0/23", self.third(0))
    }

    /// Datacenter `dc`'s network (`dc` 0 or 1).
    pub fn network(self, dc: u8) -> String {
        format!("10.77.{}.0/24", self.third(dc))
    }

    /// Datacenter `dc`'s bridge address, the hosts' default route.
    pub fn gateway(self, dc: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.third(dc), 1)
    }

    /// The address of the `index`-th host (from 1) of datacenter `dc`: .11, .12, …
    pub fn host_address(self, dc: u8, index: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.third(dc), 10 + index)
    }

    /// Datacenter `dc`'s VIP (with its prefix length), above every host address.
    pub fn vip(self, dc: u8) -> String {
        format!("10.77.{}.250/24", self.third(dc))
    }

    /// Datacenter `dc`'s bridge.
    pub fn bridge(self, dc: u8) -> String {
        format!("{}{}", self.bridge_prefix(), dc + 1)
    }

    /// Every bridge of this lab starts with this.
    pub fn bridge_prefix(self) -> String {
        format!("pglab{}-dc", self.tag())
    }

    /// Every network namespace of this lab starts with this.
    pub fn netns_prefix(self) -> String {
        format!("pglab{}-", self.tag())
    }

    /// Every host-side veth of this lab starts with this.
    pub fn veth_prefix(self) -> String {
        format!("pgl{}-", self.tag())
    }

    /// The directory under a cgroup hierarchy's root that holds this lab's hosts.
    pub fn cgroup_dir(self) -> String {
        format!("pgstrap-lab{}", self.tag())
    }

    /// The nft table (family inet) of this lab's egress filter and NAT.
    pub fn nft_table(self) -> String {
        format!("pgstrap_lab{}", self.tag())
    }

    /// The nspawn machine name of a host (unique on the machine: nspawn keeps a directory per
    /// machine name under /run/systemd/nspawn). The host's hostname is its own name either way.
    pub fn machine(self, host: &str) -> String {
        if self.0 == 0 {
            host.to_string()
        } else {
            format!("{host}-lab{}", self.0)
        }
    }

    /// The package cache's directory name under the cache directory (one cache per running
    /// apt-cacher-ng).
    pub fn package_cache(self) -> String {
        if self.0 == 0 {
            "apt-cacher-ng".into()
        } else {
            format!("apt-cacher-ng-{}", self.0)
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where the machine keeps which lab directory owns a slot (until that lab's `down`).
fn owner_file(slot: Slot) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/pgstrap-lab-slot{}", slot.0))
}

/// The lab directory that owns `slot`, if one does.
pub fn owner(slot: Slot) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(owner_file(slot)).ok()?;
    Some(std::path::PathBuf::from(text.trim_end_matches('\n')))
}

/// Record that the lab in `dir` owns `slot` (call under the machine lock).
pub fn claim(slot: Slot, dir: &std::path::Path) -> Result<()> {
    let file = owner_file(slot);
    std::fs::write(&file, format!("{}\n", dir.display())).map_err(|error| {
        Error::failure(
            format!("could not write {}: {error}", file.display()),
            Some("run as root".into()),
        )
    })
}

/// Forget the owner of `slot` when it is the lab in `dir` (call under the machine lock).
pub fn release(slot: Slot, dir: &std::path::Path) {
    if owner(slot).is_some_and(|o| o == dir) {
        let _ = std::fs::remove_file(owner_file(slot));
    }
}

/// The nft tables of every lab on this machine (`pgstrap_lab`, `pgstrap_lab1`, …) in the text of
/// `nft list tables`.
pub fn lab_tables(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("table inet "))
        .filter(|name| {
            name.strip_prefix("pgstrap_lab")
                .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
        })
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_0_keeps_the_names_and_addresses_labs_always_had() {
        let slot = Slot::default();
        assert_eq!(slot.range(), "10.77.0.0/23");
        assert_eq!(slot.network(1), "10.77.1.0/24");
        assert_eq!(slot.gateway(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(slot.host_address(1, 3), Ipv4Addr::new(10, 77, 1, 13));
        assert_eq!(slot.vip(0), "10.77.0.250/24");
        assert_eq!(slot.bridge(0), "pglab-dc1");
        assert_eq!(slot.netns_prefix(), "pglab-");
        assert_eq!(slot.veth_prefix(), "pgl-");
        assert_eq!(slot.cgroup_dir(), "pgstrap-lab");
        assert_eq!(slot.nft_table(), "pgstrap_lab");
        assert_eq!(slot.machine("n1"), "n1");
        assert_eq!(slot.package_cache(), "apt-cacher-ng");
    }

    #[test]
    fn another_slot_shares_no_name_or_address_with_slot_0() {
        let zero = Slot::default();
        let two = Slot::new(2).expect("slot 2");
        assert_eq!(two.range(), "10.77.4.0/23");
        assert_eq!(two.network(1), "10.77.5.0/24");
        assert_eq!(two.gateway(1), Ipv4Addr::new(10, 77, 5, 1));
        assert_eq!(two.vip(0), "10.77.4.250/24");
        assert_eq!(two.bridge(1), "pglab2-dc2");
        assert_eq!(two.machine("n1"), "n1-lab2");
        // No name of one slot starts with another slot's prefix (a `down` removes by prefix).
        for (a, b) in [(zero, two), (two, zero)] {
            assert!(!b.netns_prefix().starts_with(&a.netns_prefix()));
            assert!(!b.veth_prefix().starts_with(&a.veth_prefix()));
            assert!(!b.bridge_prefix().starts_with(&a.bridge_prefix()));
        }
        assert!(format!("{}n200", Slot::new(Slot::MAX).expect("max").veth_prefix()).len() <= 15);
        assert!(Slot::new(10).is_err());
    }

    #[test]
    fn lab_tables_are_found_by_name() {
        let listing = "table inet filter\ntable inet pgstrap_lab\ntable inet pgstrap_lab3\ntable inet pgstrap_labx\n";
        assert_eq!(lab_tables(listing), ["pgstrap_lab", "pgstrap_lab3"]);
    }
}
