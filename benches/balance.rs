//! `pick()` over 100 servers for each balancer: the candidates for one
//! request, as `Upstream::send` asks for them. Run with `cargo bench --bench balance`.

use criterion::{Criterion, criterion_group, criterion_main};
use relais::config::Balance;
use relais::internals::{Balancer, hash};

fn pick(c: &mut Criterion) {
    let addresses: Vec<String> = (0..100).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250)).collect();
    let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let weights = vec![1u32; 100];
    let load: Vec<usize> = (0..100).map(|i| i % 7).collect();
    let mut group = c.benchmark_group("pick of 100 servers");
    for (label, kind, bound) in [
        ("round_robin", Balance::RoundRobin, 0),
        ("least_conn", Balance::LeastConn, 0),
        ("ewma", Balance::Ewma, 0),
        ("hash", Balance::Hash, 0),
        ("hash bounded 125%", Balance::Hash, 125),
        ("ip_hash", Balance::IpHash, 0),
    ] {
        let b = Balancer::new(kind, &names, &weights).bounded(bound);
        let mut k = 0u64;
        group.bench_function(label, |bench| {
            bench.iter(|| {
                k += 1;
                let key = matches!(kind, Balance::Hash | Balance::IpHash).then(|| hash(&[&k.to_le_bytes()]));
                b.candidates(100, |i| load[i], |i| weights[i], key)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
