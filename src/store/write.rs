//! Writes: one build, a batch of imported lines, a purge.
