//! The inventory.
pub mod diag;
pub mod raw;
pub mod secrets;
pub mod vars;
