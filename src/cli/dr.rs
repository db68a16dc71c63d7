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
        /// Promote from what the standby side has replayed — writes it had not received are
        /// lost — and fence the old side: its hosts will not start Patroni when they come back.
        /// Then edit the inventory as the command says; `apply` rebuilds the old side as a
        /// standby cluster.
        #[arg(long)]
        emergency_may_lose_data: bool,
        /// Renamed to `--emergency-may-lose-data` (patronictl's `--force` means "do not ask").
        #[arg(long, hide = true)]
        force: bool,
        /// Do not ask (on a terminal, the promotion is shown and confirmed first).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        DrCommand::Promote {
            inventory,
            cluster,
            json,
            emergency_may_lose_data,
            force,
            yes,
        } => {
            if force {
                return Err(crate::error::Error::usage(
                    "`dr promote --force` is now `dr promote --emergency-may-lose-data`",
                    Some("the emergency promotion may lose the writes the standby side had not received; the planned one (without the flag) loses none".into()),
                ));
            }
            let project = crate::project::load(&inventory.inventory, &inventory.set)?;
            let (project, secrets) = super::running_secrets(&project)?;
            let steps = if emergency_may_lose_data {
                vec![
                    format!("promote `{cluster}` from what it has replayed: writes its primary side acknowledged and it had not received are lost"),
                    "fence the old primary side: its hosts will not start Patroni when they come back".to_owned(),
                ]
            } else {
                vec![format!("promote `{cluster}` and demote its primary side to its standby cluster: writes pause until the promoted side takes them (no acknowledged write lost)")]
            };
            if !crate::ui::confirm(&format!("dr promote {cluster}"), &steps, yes) {
                return Err(super::declined());
            }
            if emergency_may_lose_data {
                let report = super::block_on(crate::stack::dr::emergency::promote(
                    &project, &secrets, &cluster,
                ))??;
                if json {
                    crate::ui::print_json(&report);
                }
                crate::ui::eprint(&crate::ui::dr_forced_text(&report));
                return Ok(0);
            }
            let report = super::block_on(crate::stack::dr::promote(&project, &secrets, &cluster))??;
            if json {
                crate::ui::print_json(&report);
            }
            crate::ui::eprint(&crate::ui::dr_promote_text(&report));
            Ok(0)
        }
    }
}
