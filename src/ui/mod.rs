//! The only code that prints to the terminal: diagnostics, summaries, diffs, progress.

use std::io::IsTerminal;

/// Set up `tracing` logs on stderr: warnings by default, more with `-v`.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSTRAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("pgstrap={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Print a diagnostic: graphical with a source snippet; colours only on a terminal.
pub fn print_report(report: &miette::Report) {
    let theme = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = format!("error: {report}\n");
    }
    eprint!("{out}");
}

/// Print a line to stderr (messages for people; stdout is only for data).
pub fn eprintln(line: &str) {
    eprintln!("{line}");
}
