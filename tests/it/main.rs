//! Integration tests: the real executable against real services started on loopback.
