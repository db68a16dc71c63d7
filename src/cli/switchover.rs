//! `pgstrap switchover -i INV [--to HOST]`: a planned switchover; returns when the new primary
//! serves writes through the VIP.

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// The cluster (needed when the inventory has several primary clusters).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The host to become primary (default: the healthiest replica, chosen by Patroni).
    #[arg(long, value_name = "HOST")]
    pub to: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not ask (on a terminal, the switchover is shown and confirmed first).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let project = crate::project::load(&args.inventory.inventory, &args.inventory.set)?;
    let (project, secrets) = super::running_secrets(&project)?;
    let cluster = crate::stack::primary_cluster(&project, args.cluster.as_deref())?;
    let to = args
        .to
        .as_deref()
        .map_or_else(|| "the healthiest replica".to_owned(), |h| format!("`{h}`"));
    if !crate::ui::confirm(
        &format!("switchover of cluster {}", cluster.name),
        &[format!(
            "the primary hands over to {to}; writes through the VIP pause for a few seconds (sessions are cut)"
        )],
        args.yes,
    ) {
        return Err(super::declined());
    }
    let report = super::block_on(crate::stack::ops::switchover::switchover(
        &project,
        &secrets,
        args.cluster.as_deref(),
        args.to.as_deref(),
    ))??;
    if args.json {
        crate::ui::print_json(&report);
    } else {
        crate::ui::eprintln(&crate::ui::switchover_text(&report));
    }
    Ok(0)
}
