//! Clients for the services cachewarden acts on: OCI registries and BuildKit builders.

pub mod buildkit;
pub mod cache_record;
pub mod collector;
pub mod endpoint;
pub mod engine;
pub mod mount_copy;

pub mod redact;
pub mod registry;
pub mod retry;
