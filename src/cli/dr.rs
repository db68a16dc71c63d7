//! `pgstrap dr promote -i INV --cluster C`: the planned promotion of a DR standby cluster (also
//! the fail back: the same command for the other cluster of the pair).

use crate::cli::InventoryArgs;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DrCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DrCommand {
    /// Promote a standby cluster while its primary side answers: the primary side becomes its
    /// standby cluster, with no acknowledged write lost. Then edit the inventory (`standby_of`)
    /// as the command says; `apply` refuses until it matches.
    Promote {
        #[command(flatten)]
        inventory: InventoryArgs,
        /// The standby cluster to promote.
        #[arg(long)]
        cluster: String,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Emergency: the primary side is gone (refused while any of its members answers).
        /// Promote from what the standby side has replayed and fence the old side: its hosts
        /// will not start Patroni when they come back. Then edit the inventory as the command
        /// says; `apply` rebuilds the old side as a standby cluster.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        DrCommand::Promote {
            inventory,
            cluster,
            json,
            force,
        } => {
            let project = crate::render::load_project(&inventory.inventory, &inventory.set)?;
            let secrets = super::running_secrets(&project)?;
            if force {
                let report = super::block_on(crate::stack::dr::force::promote(
                    &project, &secrets, &cluster,
                ))??;
                if json {
                    crate::ui::print_json(&report);
                }
                eprint!("{}", crate::ui::dr_forced_text(&report));
                return Ok(0);
            }
            let report = super::block_on(crate::stack::dr::promote(&project, &secrets, &cluster))??;
            if json {
                crate::ui::print_json(&report);
            }
            eprint!("{}", crate::ui::dr_promote_text(&report));
            Ok(0)
        }
    }
}
