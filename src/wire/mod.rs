//! JSON wire types, separate from the domain types; each format carries a version.

pub mod provenance;
#[cfg(test)]
mod provenance_fuzz;
pub mod steps;
