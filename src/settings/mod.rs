//! Settings, a floor of the model: the precedence layers and the one function that resolves them
//! (`vars.rs`), and the type of every setting, declared beside each role default and checked on
//! load (`types.rs`). Nothing here knows an inventory, a role manifest or a host.

pub mod types;
pub mod vars;

/// How pgstrap reads YAML it is given (the inventory, `--set` values): YAML 1.2 booleans only
/// (`true`/`false`), so `yes`, `no`, `on` and `off` stay the strings they look like (PostgreSQL's
/// `on`/`off` parameters keep their spelling, and a boolean field refuses them rather than
/// reading `no` as false).
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}
