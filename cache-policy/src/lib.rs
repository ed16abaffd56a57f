use std::time::Duration;
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    pub default_ttl: Option<Duration>, pub min_ttl: Option<Duration>, pub max_ttl: Option<Duration>, pub override_ttl: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>, pub stale_if_error: Option<Duration>, pub bypass: bool, pub store_set_cookie: bool,
}
