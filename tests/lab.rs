//! End-to-end tests of `pgstrap lab` on this machine (root; set PGSTRAP_E2E=1).

#[test]
fn placeholder() {}
