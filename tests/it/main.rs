//! Integration tests: the real executable against real services started on loopback.

#[path = "../harness/mod.rs"]
mod harness;

mod build;
mod buildkit;
mod chain;
mod cli;
mod collect;
mod common;
mod first_use;
mod import;
mod wrap;

mod audit;
mod audit_builds;
mod audit_mounts;
mod db_copy;
mod docker26;
mod dockerfile;
mod integrity;
mod lifecycle;
mod ls;
mod nul;
mod output;
mod pg_harness;
mod postgres;
mod purge;
mod purge_facts;
mod purge_provenance;
mod record;
mod registry;
mod runbooks;
mod scenarios;
mod schemas;
mod serve;
mod store_access;
mod stored_seeds;
mod sweep;
mod trace_edges;
mod verify;
