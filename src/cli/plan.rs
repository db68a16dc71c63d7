//! `pgstrap plan`

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> crate::error::Result<i32> {
    Err(crate::error::Error::usage("`pgstrap plan` is not built yet", None))
}
