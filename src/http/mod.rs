//! The ground floor every layer stands on, beside `config/` and `metrics.rs`:
//! the one body type and the header names shared between layers. It imports
//! no stage.

pub(crate) mod body;
pub(crate) mod h1;
pub(crate) mod interim;
pub(crate) mod names;
pub(crate) mod upgrade;
