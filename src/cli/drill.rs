//! `pgstrap drill SCENARIO -i INV`: run a failure scenario under write clients and report what a
//! client saw, whether any acknowledged write was lost, and whether any member diverged.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::InventoryArgs;
use crate::error::Result;
use crate::stack::drill::{self, Scenario};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The fault to inject.
    #[arg(value_enum)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The cluster (needed when the inventory has several primary clusters).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Seconds the fault lasts before it is healed.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds to wait for the cluster to converge after the heal.
    #[arg(long, default_value_t = 240)]
    pub converge_timeout: u64,
    /// The lab directory (faults on lab hosts are made by the lab).
    #[arg(
        long,
        value_name = "DIR",
        env = "PGSTRAP_LAB_DIR",
        default_value = crate::lab::DEFAULT_DIR
    )]
    pub lab_dir: PathBuf,
    /// Confirm a drill on hosts that are not lab hosts (only faults made over SSH, each healed by
    /// a timer on the host itself).
    #[arg(long)]
    pub on_servers: bool,
    /// Also write from the primary's own host, straight to its PostgreSQL, as an application
    /// beside it would: unlike the VIP's clients, it keeps writing to a cut-off primary. Only
    /// `patroni.synchronous_mode` keeps those writes from being acknowledged and then lost.
    #[arg(long)]
    pub client_on_primary: bool,
    /// Save every host's journal of the stack's services (Patroni, etcd, HAProxy, keepalived,
    /// PgBouncer, pgstrap's helpers), from just before the fault to the end, as DIR/HOST.log.
    #[arg(long, value_name = "DIR")]
    pub journals: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let options = drill::Options {
        scenario: args.scenario,
        cluster: args.cluster,
        duration: Duration::from_secs(args.duration),
        lab: Some(std::sync::Arc::new(crate::lab::DrillFaults(args.lab_dir))),
        on_servers: args.on_servers,
        converge_timeout: Duration::from_secs(args.converge_timeout),
        client_on_primary: args.client_on_primary,
        journals: args.journals,
    };
    let report = super::block_on(drill::drill(&project, &options))??;
    if args.json {
        crate::ui::print_json(&report);
    }
    crate::ui::eprint(&crate::ui::drill_text(&report));
    Ok(if report.ok() { 0 } else { 1 })
}
