//! The HA stack on top of the engine: the rollout order and its health gates, verification with
//! real clients, and (later) the day-2 orchestrations: membership changes and the DR standby.

pub mod etcd;
pub mod gate;
pub mod patroni;
pub mod postgres;
pub mod preflight;
pub mod restart;
pub mod rollout;
pub mod scram;
pub mod status;
pub mod switchover;
pub mod verify;
