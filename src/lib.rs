//! reshard: plan and carry out online resharding of application-sharded relational databases.
//!
//! The library is what the `reshard` binary runs; planning and routing are usable on their own
//! from other Rust programs.

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod error;
pub mod hashing;
pub mod ident;
pub mod job;
pub mod map;
pub mod plan;
pub mod planner;
pub mod shard_url;

pub use map::{Key, Map, Partitioner};
pub use plan::Plan;
