//! Certificates over ACME (RFC 8555).

use std::sync::Arc;

use tokio::sync::watch;

use super::Issued;
use crate::config::{AcmeConfig, Config};
use crate::metrics::Metrics;

/// The names to obtain certificates for.
pub fn names(acme: &AcmeConfig, _config: &Config) -> Vec<String> {
    acme.names.clone()
}

pub async fn run(
    _acme: AcmeConfig,
    _names: Vec<String>,
    _issued: Arc<Issued>,
    _metrics: Arc<Metrics>,
    _stop: watch::Receiver<bool>,
) {
}
