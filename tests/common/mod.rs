//! Helpers shared by the integration tests. Each concept is its own module; add yours with a
//! `pub mod x;` line.
#![allow(dead_code)]

/// One async test per backend for each named `async fn name(kind: Kind)` of the file: modules
/// `sqlite`, `postgres` and `mysql`, so that `cargo test postgres::` picks one server.
#[allow(unused_macros)]
macro_rules! per_backend_async {
    ($($name:ident),* $(,)?) => {
        mod sqlite { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Sqlite).await }
        )* }
        mod postgres { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Postgres).await }
        )* }
        mod mysql { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(Kind::Mysql).await }
        )* }
    };
}

pub mod cluster;
pub mod conn;
pub mod db;
pub mod online;
pub mod private;
pub mod suggest;
pub mod writer;
