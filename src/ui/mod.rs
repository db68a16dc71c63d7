//! The only code that prints to the terminal: diagnostics, summaries, diffs, progress.

mod dr;
mod drill;
mod ops;
pub mod progress;
mod status;
pub mod summary;

pub use dr::{dr_forced_text, dr_promote_text};
pub use drill::drill_text;
pub use ops::{
    failover_plan_lines, failover_text, history_text, maintenance_text, reinit_text, restart_text,
    update_plan_lines, update_text,
};
pub use status::status_text;

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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

/// Print a diagnostic, compiler style:
///
/// ```text
/// error: cluster `main`: unknown host `pg4` in `etcd`
///   --> inventory.yaml:8:22
///    |
///  8 |     etcd: [pg1, pg2, pg4]
///    |                      ^ not defined under `hosts:`
///    |
/// hint: did you mean `pg3`?
/// ```
pub fn print_report(report: &miette::Report) {
    eprint!("{}", format_report(report.as_ref()));
}

/// The text of [`print_report`]; also used by tests.
pub fn format_report(diagnostic: &dyn miette::Diagnostic) -> String {
    use std::fmt::Write;
    let severity = match diagnostic.severity() {
        Some(miette::Severity::Warning) => "warning",
        Some(miette::Severity::Advice) => "note",
        _ => "error",
    };
    let mut out = String::new();
    let _ = writeln!(out, "{severity}: {}", headline(diagnostic));
    let mut cause = std::error::Error::source(diagnostic);
    while let Some(c) = cause {
        let _ = writeln!(out, "  caused by: {c}");
        cause = c.source();
    }
    if let (Some(source), Some(mut labels)) = (diagnostic.source_code(), diagnostic.labels()) {
        if let Some(label) = labels.next() {
            if let (Ok(contents), Ok(around)) = (
                source.read_span(label.inner(), 0, 0),
                source.read_span(label.inner(), 1, 1),
            ) {
                let line = contents.line() + 1;
                let column = contents.column() + 1;
                let name = contents.name().unwrap_or("<input>");
                // `around` starts one line earlier (unless at the top): pick the label's line.
                let text = String::from_utf8_lossy(around.data()).into_owned();
                let text = text
                    .lines()
                    .nth(contents.line() - around.line())
                    .unwrap_or("")
                    .to_owned();
                let width = line.to_string().len();
                let pad = " ".repeat(width);
                let _ = writeln!(out, "{pad}--> {name}:{line}:{column}");
                let _ = writeln!(out, "{pad} |");
                // With no context lines, miette returns the whole line holding the span.
                let _ = writeln!(out, "{line} | {}", text.trim_end());
                let marker = " ".repeat(column.saturating_sub(1));
                let _ = writeln!(out, "{pad} | {marker}^ {}", label.label().unwrap_or(""));
                let _ = writeln!(out, "{pad} |");
            }
        }
    }
    if let Some(help) = diagnostic.help() {
        let _ = writeln!(out, "hint: {help}");
    }
    out
}

/// The message without a leading `file:line:col: ` (the snippet shows it).
fn headline(diagnostic: &dyn miette::Diagnostic) -> String {
    let text = diagnostic.to_string();
    if diagnostic.source_code().is_some() && diagnostic.labels().is_some() {
        if let Some((place, rest)) = text.split_once(": ") {
            if place.matches(':').count() == 2 {
                return rest.to_owned();
            }
        }
    }
    text
}

/// Write `text` to stdout (data). A closed pipe (`pgstrap vars … | head -1`) ends the command
/// quietly with exit 0 (the reader has what it wanted); another write error (`> /dev/full`) is
/// reported and exits 1. Never a panic.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Print a line to stderr (messages for people; stdout is only for data).
pub fn eprintln(line: &str) {
    eprintln!("{line}");
}

/// Print `text` (whole lines, each ending in a newline) to stderr.
pub fn eprint(text: &str) {
    eprint!("{text}");
}

/// The one line a switchover prints.
pub fn switchover_text(report: &crate::stack::ops::switchover::SwitchoverReport) -> String {
    format!(
        "switched over cluster {}: {} → {} in {:.1}s (writes land on the new primary)",
        report.cluster, report.from, report.to, report.seconds
    )
}

/// Print inventory warnings (they do not stop the run).
/// A problem of the inventory as JSON: `severity`, `message`, `file`, `line`, `column` (0 when
/// the place is the whole file), `hint`.
pub fn problem_json(problem: &crate::inventory::diag::InventoryError) -> serde_json::Value {
    serde_json::json!({
        "severity": if problem.warning { "warning" } else { "error" },
        "message": problem.message,
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "hint": problem.help,
    })
}

/// Any reported problem as JSON: an inventory problem with its place, else its message and
/// hint only (`file`, `line`, `column` null).
pub fn report_json(report: &(dyn miette::Diagnostic + Send + Sync + 'static)) -> serde_json::Value {
    let any: &(dyn std::error::Error + 'static) = report;
    if let Some(problem) = any.downcast_ref::<crate::inventory::diag::InventoryError>() {
        return problem_json(problem);
    }
    serde_json::json!({
        "severity": match report.severity() {
            Some(miette::Severity::Warning) => "warning",
            _ => "error",
        },
        "message": report.to_string(),
        "file": null,
        "line": null,
        "column": null,
        "hint": report.help().map(|h| h.to_string()),
    })
}

/// `pgstrap report`: what went into the archive.
pub fn report_text(
    collected: &crate::stack::report::Collected,
    archive: &std::path::Path,
) -> String {
    let mut text = format!(
        "report: {} ({} host(s): facts, journals, {} managed file(s) with every secret masked; {} private key(s) left out)",
        archive.display(),
        collected.hosts.len(),
        collected.files,
        collected.keys_left_out
    );
    for (host, error) in &collected.unreachable {
        text.push_str(&format!("\nwarning: {host} could not be reached: {error}"));
    }
    text
}

/// `pgstrap preflight`: every problem (error or warning, with its hint), then the verdict.
pub fn preflight_text(
    problems: &[crate::stack::rollout::preflight::Problem],
    hosts: usize,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for problem in problems {
        let level = if problem.warning { "warning" } else { "error" };
        let _ = writeln!(out, "{level}: {}: {}", problem.host, problem.message);
        if !problem.hint.is_empty() {
            let _ = writeln!(out, "hint: {}", problem.hint);
        }
    }
    let errors = problems.iter().filter(|p| !p.warning).count();
    let _ = if errors == 0 {
        writeln!(
            out,
            "preflight: all {hosts} host(s) ready for apply ({} warning(s)); nothing was changed",
            problems.len()
        )
    } else {
        writeln!(
            out,
            "preflight: {errors} problem(s) to fix before apply; nothing was changed"
        )
    };
    out
}

pub fn print_warnings(warnings: &[crate::inventory::diag::InventoryError]) {
    for warning in warnings {
        eprint!("{}", format_report(warning));
    }
}

/// Before an action that interrupts writes or can lose data: on a terminal, show what it will do
/// and ask (`y` goes on); `yes` (`--yes`, for scripts) or no terminal on stdin goes on without
/// asking. Returns whether to go on.
pub fn confirm(action: &str, steps: &[String], yes: bool) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if yes || !std::io::stdin().is_terminal() {
        return true;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{action}:");
    for step in steps {
        let _ = writeln!(err, "  {step}");
    }
    let _ = write!(err, "Go on? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

/// Show what is about to happen on stderr (unless `quiet`), then [`confirm`] it: on a
/// terminal without `yes` the lines are shown once, with the question.
pub fn announce_and_confirm(action: &str, steps: &[String], yes: bool, quiet: bool) -> bool {
    use std::io::IsTerminal;
    let asks = !yes && std::io::stdin().is_terminal();
    if !asks && !quiet {
        for step in steps {
            eprintln(step);
        }
    }
    confirm(action, steps, yes)
}

/// Print data as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => out(&format!("{text}\n")),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// Print the `vars` table: key, value, origin.
pub fn print_vars(views: &[crate::render::VarsView]) {
    for view in views {
        match &view.cluster {
            Some(cluster) => out(&format!("# host {} in cluster {cluster}\n", view.host)),
            None => out(&format!("# host {} (in no cluster)\n", view.host)),
        }
        let width = view.vars.iter().map(|v| v.key.len()).max().unwrap_or(0);
        for entry in &view.vars {
            let value = match &entry.value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out(&format!(
                "{:width$}  {value}  ({})\n",
                entry.key, entry.origin
            ));
        }
    }
}

/// The verification report for people: one line per check.
pub fn verify_text(report: &crate::stack::verify::VerifyReport) -> String {
    let mut out = String::new();
    for check in &report.checks {
        out.push_str(&format!(
            "{} {:<8} {}: {}\n",
            if check.ok { "ok  " } else { "FAIL" },
            check.cluster,
            check.name,
            check.detail
        ));
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        out.push_str(&format!(
            "verified: all {} checks hold\n",
            report.checks.len()
        ));
    } else {
        out.push_str(&format!(
            "NOT verified: {failed} of {} checks fail\n",
            report.checks.len()
        ));
    }
    out
}

/// The rollout's outcome for people: preflight problems, the engine's table, what the
/// orchestration did, pending restarts, the verification, and one closing line.
/// `pgstrap backup`'s report.
pub fn backup_text(taken: &crate::stack::backup::Taken) -> String {
    let b = &taken.backup;
    format!(
        "cluster {}: {} backup {} on {} in {:.1} s: database {}, in the repository {} (WAL {} … {})\n",
        taken.cluster,
        b.kind,
        b.label,
        taken.repository,
        taken.seconds,
        crate::stack::backup::info::human_bytes(b.size),
        crate::stack::backup::info::human_bytes(b.repo_size),
        b.wal_start.as_deref().unwrap_or("?"),
        b.wal_stop.as_deref().unwrap_or("?"),
    )
}

/// `pgstrap restore`'s report.
pub fn restore_text(r: &crate::stack::backup::restore::RestoreReport) -> String {
    let mut out = String::new();
    for (host, path) in &r.moved_aside {
        out.push_str(&format!(
            "{host}: the data directory there was moved aside to {path}\n"
        ));
    }
    for step in &r.steps {
        out.push_str(&format!("{}: {step}\n", r.into));
    }
    let how = if r.source == r.into {
        "in place".to_owned()
    } else {
        format!("into {}", r.into)
    };
    out.push_str(&format!(
        "restored cluster {} {how} to {}: {} in {:.1} s (files {:.1} s, WAL replay {:.1} s); leader {}\n",
        r.source,
        r.target_text,
        crate::stack::backup::info::human_bytes(r.bytes),
        r.total_seconds,
        r.restore_seconds,
        r.recovery_seconds,
        r.leader,
    ));
    out
}

pub fn rotate_text(report: &crate::stack::rotate::RotateReport, verbose: u8) -> String {
    let mut out = rollout_text(&report.rollout, verbose);
    let roles: Vec<String> = report
        .roles
        .iter()
        .map(|(cluster, role)| format!("{cluster}/{role}"))
        .collect();
    out.push_str(&format!(
        "rotated: {}{}\n",
        report.secrets.join(", "),
        if roles.is_empty() {
            String::new()
        } else {
            format!(" (set in PostgreSQL: {})", roles.join(", "))
        }
    ));
    out
}

pub fn rollout_text(report: &crate::stack::rollout::RolloutReport, verbose: u8) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for problem in &report.preflight {
        let level = if problem.warning { "warning" } else { "error" };
        let _ = writeln!(out, "{level}: {}: {}", problem.host, problem.message);
        let _ = writeln!(out, "hint: {}", problem.hint);
    }
    if report.preflight.iter().any(|p| !p.warning) {
        let _ = writeln!(out, "error: preflight found problems; nothing was changed");
        return out;
    }
    if let Some(engine) = &report.engine {
        if verbose > 0 {
            out.push_str(&summary::plan_text(engine, verbose));
        }
        out.push_str(&summary::summary_text(engine));
    }
    for action in &report.actions {
        let place = match (&action.host, action.cluster.is_empty()) {
            (Some(host), false) => format!("{} {host}", action.cluster),
            (Some(host), true) => host.clone(),
            (None, _) => action.cluster.clone(),
        };
        let _ = writeln!(out, "{place}: {}", action.what);
    }
    for pending in &report.pending_restart {
        let _ = writeln!(
            out,
            "warning: {pending}: a changed parameter waits for a restart; `pgstrap apply --rolling-restart` restarts replicas first, switches over, then restarts the old primary"
        );
    }
    if let Some(verify) = &report.verify {
        out.push_str(&verify_text(verify));
    }
    // One total: the hosts' changes (the table above) and the clusters' steps (the lines above).
    let on_hosts = report
        .engine
        .as_ref()
        .map_or(0, crate::exec::Report::total_changes);
    let _ = writeln!(
        out,
        "{}: {} change(s) in {:.1} s ({on_hosts} on the hosts, {} in the clusters)",
        if report.ok() { "done" } else { "FAILED" },
        report.changes(),
        report.duration_ms as f64 / 1000.0,
        report.actions.len()
    );
    out
}
