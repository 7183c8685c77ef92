//! Clients for the services cachewarden acts on: OCI registries and BuildKit builders.
