//! What only a PostgreSQL store needs: where it is and how to connect.

pub mod connect;
