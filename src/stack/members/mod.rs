//! Membership changes made by editing the inventory: what the running clusters have against what
//! the inventory lists, and the steps that take one to the other without losing a quorum or a
//! write. `etcd.rs`: members added one at a time as learners, promoted once in sync, removed
//! with leadership moved away first. `retire.rs`: hosts that left a role (a DB member, a
//! balancer, an etcd member) have its services stopped and disabled; their data stays.

pub mod etcd;
pub mod retire;
