//! The `pgstrap` binary: parse the command line, run, print the error chain once, exit
//! 0 (ok), 1 (failed) or 2 (bad input).

fn main() {
    let code = pgstrap::cli::main();
    std::process::exit(code);
}
