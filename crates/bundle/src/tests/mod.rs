//! Golden tests over the sample repositories in `testdata/repos`.
//! `UPDATE_GOLDEN=1 cargo test -p flotilla-bundle` rewrites the goldens.

mod fuzz;
mod golden;
mod hostile;
