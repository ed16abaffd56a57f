//! The ground floor every layer stands on, beside `config/` and `metrics.rs`:
//! the one body type. It imports no stage.

pub mod body;
