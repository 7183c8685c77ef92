//! Integration tests: the real executable against real services started on loopback.

#[path = "../harness/mod.rs"]
mod harness;

mod buildkit;
mod cli;
mod common;
mod wrap;

mod registry;
mod purge;
mod lifecycle;
mod schemas;
mod scenarios;
mod sweep;
mod audit;
mod runbooks;
mod record;
