//! Tests for the matching rules, the index's events and its equivalence
//! with a from-scratch computation. Fixtures are built in [`fixtures`].

mod fixtures;
mod index_events;
mod index_matches_scratch;
mod rules;
