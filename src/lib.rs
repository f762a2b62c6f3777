//! reshard: plan and carry out online resharding of application-sharded relational databases.
//!
//! The library is what the `reshard` binary runs; planning and routing are usable on their own
//! from other Rust programs.

pub mod atomic;
pub mod backend;
pub mod backlog;
pub mod batch_size;
pub mod capture;
pub mod catalog;
pub mod cleanup;
pub mod cli;
pub mod commands;
pub mod copy;
pub mod cutover;
pub mod cutover_pick;
pub mod decide;
pub mod demo;
pub mod error;
pub mod execute;
pub mod failpoint;
pub mod finish;
pub mod hashing;
pub mod ident;
pub mod job;
pub mod lag;
pub mod lease;
pub mod lockwait;
pub mod map;
pub mod picture;
pub mod plan;
pub mod plan_check;
pub mod planner;
pub mod preflight;
pub mod progress;
pub mod replica_read;
pub mod retry;
pub mod router;
pub mod shard_url;
pub mod signals;
pub mod sqlroute;
pub mod suggest;
pub mod switch_gate;
pub mod throttle;
pub mod triggers;
pub mod verify;
pub mod worker;
pub mod workload;

pub use backend::sqlite_functions::register_sqlite_functions;
pub use map::{Key, Map, Partitioner};
pub use plan::Plan;
pub use router::{Route, Router};
