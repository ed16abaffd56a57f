//! The parts the benchmarks (`benches/`) and a few tests drive directly,
//! without a proxy around them. Not an API: hidden from the docs, and free to
//! change with the code it names.

pub use crate::cache::disk::BodyFile;
pub use crate::cache::purge::Target;
pub use crate::cache::{Cache, Entry, Stored, key};
pub use crate::compress::encode_all;
pub use crate::guard::{Guard, Outcome, Subject};
pub use crate::metrics::{Metrics, PurgeMode};
pub use crate::upstream::balance::{Balancer, hash};
