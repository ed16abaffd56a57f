//! The guard's cost per request: one request through 1,000 denied CIDR
//! blocks, 50 regex rules and one rate-limit zone (none of which refuses it),
//! and through a guard with nothing configured. Run with `cargo bench --bench guard`.

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, header};
use relais::config::Config;
use relais::internals::Metrics;
use relais::internals::{Guard, Subject};

#[path = "../examples/busy-guard.rs"]
#[allow(dead_code, unreachable_pub)]
mod busy_guard;

fn busy_config() -> String {
    format!(
        "{}\n[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        busy_guard::toml()
    )
}

fn request() -> http::request::Parts {
    Request::get("/products/42?lang=en")
        .header(header::HOST, "example.test")
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .header(header::USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn through(c: &mut Criterion, name: &str, toml: &str) {
    let config = Config::from_toml(toml, "bench.toml").unwrap();
    let guard = Guard::new(&config, None).unwrap();
    let route = guard.route(&config, 0, &config.routes[0]).unwrap();
    let metrics = Metrics::new();
    let parts = request();
    // Clients from 1,000 addresses, so the zone looks up one key of many.
    let peers: Vec<std::net::IpAddr> = (0..1000u32).map(|i| std::net::Ipv4Addr::from(0xc000_0200 + i).into()).collect();
    let mut next = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            next = (next + 1) % peers.len();
            let peer = peers[next];
            assert!(guard.target(&parts.uri).unwrap().is_none());
            let ip = guard.client(peer, &parts.headers).map_or(peer, |c| c.ip);
            let global = Subject::new(ip, &parts, "none");
            let skip = matches!(guard.check(&global, &metrics).unwrap(), relais::internals::Outcome::Allowed);
            let subject = Subject::new(ip, &parts, "routes[0]");
            route.check(&subject, skip, &metrics).unwrap();
            if route.has_limits() {
                let permits = route.admit(&subject, &metrics).now_or_never().expect("admitted at once").unwrap();
                drop(permits);
            }
        })
    });
}

fn guard(c: &mut Criterion) {
    through(c, "guard/1000 CIDRs, 50 regex rules, 1 zone", &busy_config());
    through(
        c,
        "guard/nothing configured",
        "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n",
    );
    // A path that must be normalised, through the same guard.
    let config = Config::from_toml(&busy_config(), "bench.toml").unwrap();
    let g = Guard::new(&config, None).unwrap();
    let uri: http::Uri = "/a/./b/../products/%34%32?lang=en".parse().unwrap();
    c.bench_function("guard/normalise a dotted, encoded path", |b| b.iter(|| g.target(&uri).unwrap()));
}

criterion_group!(benches, guard);
criterion_main!(benches);
