//! Helpers shared by the integration tests. Each concept is its own module; add yours with a
//! `pub mod x;` line.
#![allow(dead_code)]

pub mod cluster;
pub mod conn;
pub mod db;
pub mod writer;
