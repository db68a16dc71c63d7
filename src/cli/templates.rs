//! `pgstrap templates list|show NAME`: the templates in effect and where each comes from.

use std::path::PathBuf;

use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List every template and where the one in effect comes from.
    List(Where),
    /// Print the template in effect for NAME (e.g. patroni/config.yml.j2) and where it came from.
    Show {
        name: String,
        #[command(flatten)]
        place: Where,
    },
}

#[derive(Debug, clap::Args)]
pub struct Where {
    /// The inventory whose override directory applies (default: none, built-in only).
    #[arg(short, long, value_name = "FILE", env = "PGSTRAP_INVENTORY")]
    pub inventory: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<i32> {
    match args.command {
        Command::List(place) => {
            for (name, origin) in crate::render::template_list(place.inventory.as_deref())? {
                crate::ui::out(&format!("{name}\t{origin}\n"));
            }
        }
        Command::Show { name, place } => {
            let (text, origin) = crate::render::template_show(place.inventory.as_deref(), &name)?;
            crate::ui::eprintln(&format!("# {name}: {origin}"));
            crate::ui::out(&text);
        }
    }
    Ok(0)
}
