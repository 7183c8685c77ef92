//! PostgreSQL as the store: where a `--db` URL points and how to connect to it.

pub mod connect;
mod pgpass;
mod tls;
