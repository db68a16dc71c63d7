//! HAProxy's runtime API on a cluster's balancers (the admin socket, through `socat` over the
//! engine's SSH connections): told directly what Patroni decided, HAProxy routes writes to a new
//! primary at once instead of after its health checks' `fall` intervals.

use crate::connect::{RemoteCommand, Session};
use crate::inventory::secrets::Secrets;
use crate::inventory::Cluster;
use crate::project::Project;

/// The admin socket haproxy.cfg declares.
const ADMIN_SOCKET: &str = "/run/haproxy/admin.sock";

/// Open connections to a cluster's balancers.
pub struct Balancers {
    sessions: Vec<(String, Session)>,
}

impl Balancers {
    /// Connect to every balancer of `cluster` at once; one that cannot be reached is left out
    /// (its health checks still converge on their own).
    pub async fn open(project: &Project, cluster: &Cluster, secrets: &Secrets) -> Self {
        let connects = cluster.balancers.iter().map(|host| async move {
            crate::exec::connect(project, host, secrets)
                .await
                .ok()
                .map(|session| (host.clone(), session))
        });
        Self {
            sessions: futures::future::join_all(connects)
                .await
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// The write port's backend: `old` down, `new` up (and `new` out of the read port's), on
    /// every balancer at once. The health
    /// checks keep running and correct a wrong verdict at their next interval.
    pub async fn hand_over_primary(&self, old: &str, new: &str) {
        self.run(format!(
            "set server primary/{old} health down; set server primary/{new} health up; set server replicas/{new} health down\n"
        ))
        .await;
    }

    /// A server of `backend` drained (`drain`: no new sessions, those open finish) or back
    /// (`ready`), on every balancer at once.
    pub async fn set_state(&self, backend: &str, server: &str, state: &str) {
        self.run(format!("set server {backend}/{server} state {state}\n"))
            .await;
    }

    async fn run(&self, commands: String) {
        let runs = self.sessions.iter().map(|(host, session)| {
            let command = RemoteCommand::new(&["socat", "stdio", ADMIN_SOCKET])
                .with_stdin(commands.clone().into_bytes());
            async move {
                match session.run(&command).await {
                    Ok(output) if output.stdout_text().trim().is_empty() => {}
                    Ok(output) => tracing::debug!(
                        "{host}: haproxy runtime API: {}",
                        output.stdout_text().trim()
                    ),
                    Err(e) => tracing::debug!("{host}: haproxy runtime API: {e}"),
                }
            }
        });
        futures::future::join_all(runs).await;
    }

    pub async fn close(self) {
        futures::future::join_all(self.sessions.into_iter().map(|(_, s)| s.close())).await;
    }
}
