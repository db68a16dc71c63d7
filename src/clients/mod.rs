//! The clients of the stack's programs, in one place, each bound to nothing but addresses and
//! credentials: Patroni's REST API (with the cluster-bound "first member that answers" view),
//! etcd's v3 HTTP gateway, PostgreSQL (SCRAM, TLS), HAProxy's admin socket (through the engine's
//! session), and the polling gate every wait uses. Orchestrations (`stack/`) are built on these.

pub mod etcd;
pub mod gate;
pub mod haproxy;
pub mod patroni;
pub mod postgres;
pub mod scram;
