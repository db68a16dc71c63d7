//! `pgstrap rotate passwords -i INV [--secret NAME]… [--keep-values]`: a deliberate rotation of
//! a running cluster's passwords, without an outage (see `stack::rotate`).

use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: RotateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RotateCommand {
    /// New passwords for the running clusters (database roles, Patroni's REST API, keepalived):
    /// written to the secrets file first, set in PostgreSQL as SCRAM verifiers, then every host's
    /// configuration reloaded; open sessions are not cut.
    Passwords {
        #[command(flatten)]
        engine: crate::cli::EngineArgs,
        /// Only this secret (repeatable; default: all).
        #[arg(long = "secret", value_name = "NAME")]
        secrets: Vec<String>,
        /// Bring the cluster to the values the secrets file and sources hold now instead of
        /// generating new ones: finishes an interrupted rotation, or one whose new values were
        /// set at their source (`env:` / `file:`).
        #[arg(long)]
        keep_values: bool,
    },
}

pub fn run(args: Args, verbose: u8) -> Result<i32> {
    let RotateCommand::Passwords {
        engine,
        secrets,
        keep_values,
    } = args.command;
    let project = crate::project::load(&engine.inventory.inventory, &engine.inventory.set)?;
    let json = engine.json;
    let report = super::run_with_progress(verbose, engine.options(), |engine| async move {
        let options = crate::stack::rotate::Options {
            names: secrets,
            keep_values,
            rollout: crate::stack::rollout::Options {
                engine,
                ..Default::default()
            },
        };
        crate::stack::rotate::passwords(&project, options).await
    })?;
    if json {
        crate::ui::print_json(&report);
    }
    crate::ui::eprint(&crate::ui::rotate_text(&report, verbose));
    Ok(if report.rollout.ok() { 0 } else { 1 })
}
