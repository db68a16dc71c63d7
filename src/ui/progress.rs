//! Live progress of a plan/apply: one line per host showing its current step (indicatif bars when
//! stderr is a terminal, plain lines otherwise). It is the only consumer of the engine's events.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::exec::{Event, HostStatus, Mode};

/// The bars drawn now, so that other lines (a long wait's) are printed above them, not through.
static ACTIVE: std::sync::Mutex<Option<MultiProgress>> = std::sync::Mutex::new(None);

/// A line on stderr that does not tear the progress bars.
pub fn line(text: &str) {
    let active = ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match active {
        Some(multi) => multi.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// Draw events until the channel closes. `verbose` ≥ 1 shows every remote command and its time.
pub fn spawn(mut events: UnboundedReceiver<Event>, verbose: u8) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        if terminal {
            *ACTIVE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(multi.clone());
        }
        let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
        let mut mode = Mode::Plan;
        let width = 8;
        let print = |line: String| {
            if terminal {
                multi.suspend(|| eprintln!("{line}"));
            } else {
                eprintln!("{line}");
            }
        };
        while let Some(event) = events.recv().await {
            match event {
                Event::Started { hosts, mode: m } => {
                    mode = m;
                    if terminal {
                        let style =
                            ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner());
                        let width = hosts.iter().map(String::len).max().unwrap_or(4);
                        for host in hosts {
                            let bar = multi.add(ProgressBar::new_spinner());
                            bar.set_style(style.clone());
                            bar.set_prefix(format!("{host:width$}"));
                            bar.enable_steady_tick(Duration::from_millis(120));
                            bar.set_message("waiting");
                            bars.insert(host, bar);
                        }
                    }
                }
                Event::Step { host, step } => match bars.get(&host) {
                    Some(bar) => bar.set_message(step),
                    None if verbose > 0 => print(format!("{host:width$} {step}")),
                    None => {}
                },
                Event::Command {
                    host,
                    command,
                    duration_ms,
                    ok,
                } => {
                    if verbose > 0 {
                        let first = command.lines().next().unwrap_or("");
                        let mark = if ok { "" } else { " FAILED" };
                        print(format!("{host:width$} $ {first} ({duration_ms} ms){mark}"));
                    }
                }
                Event::Change {
                    host,
                    subject,
                    summary,
                    ..
                } => {
                    if mode == Mode::Apply {
                        print(format!("{host:width$} changed {subject}: {summary}"));
                    }
                }
                Event::Warning { host, message } => print(format!("warning: {host}: {message}")),
                Event::Stage { message } => print(format!("==> {message}")),
                Event::Finished { host, status } => {
                    let text = match status {
                        HostStatus::Ok => "ok",
                        HostStatus::Changed => "changed",
                        HostStatus::Failed => "failed",
                        HostStatus::Unreachable => "unreachable",
                    };
                    if let Some(bar) = bars.get(&host) {
                        bar.finish_with_message(text);
                    }
                }
            }
        }
        for bar in bars.values() {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
        *ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let _ = multi.clear();
    })
}

/// Run an engine call with the progress drawn from its events (on the caller's runtime: the CLI
/// builds the only one, `cli::run_with_progress`).
pub async fn with_progress<F, Fut, T>(
    verbose: u8,
    mut options: crate::exec::Options,
    call: F,
) -> crate::error::Result<T>
where
    F: FnOnce(crate::exec::Options) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    options.events = Some(sender);
    let drawer = spawn(receiver, verbose);
    let result = call(options).await;
    // The options (and the sender in them) were moved into the call and are dropped by now: the
    // drawer sees the channel close and finishes.
    let _ = drawer.await;
    result
}
