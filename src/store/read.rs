//! Reads: lookups, export, and the indexed queries the trace runs.
