//! The miss cost of compression: encoding a 100 KiB HTML page (the one
//! `benches/compare/compare.sh` serves for S8, when it has run; else a generated page) whole,
//! per algorithm and level, in MB/s of input; the output size is printed too.
//! Run with `cargo bench --bench compress`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relais::config::Encoding;
use relais::internals::encode_all;

fn page() -> Vec<u8> {
    std::fs::read("/var/tmp/relais-compare/www/html/100k").unwrap_or_else(|_| {
        let words = ["cache", "proxy", "origin", "request", "response", "header", "stale", "fresh", "purge", "route"];
        let mut out = String::new();
        let mut x: u32 = 42;
        while out.len() < 100 * 1024 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            out.push_str(&format!("<p class=\"w{}\">{} {}</p>\n", x % 7, words[(x >> 8) as usize % 10], x % 1000));
        }
        out.into_bytes()
    })
}

fn levels(c: &mut Criterion) {
    let page = page();
    let mut group = c.benchmark_group("encode 100KiB html");
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(2));
    for (e, levels) in [
        (Encoding::Gzip, &[1, 5, 6, 9][..]),
        (Encoding::Br, &[1, 4, 6, 9, 11][..]),
        (Encoding::Zstd, &[1, 3, 9, 12, 19][..]),
    ] {
        for &level in levels {
            let size = encode_all(&page, e, level).unwrap().len();
            println!("{} {level}: {} -> {size} bytes", e.token(), page.len());
            group.bench_function(format!("{} {level}", e.token()), |b| b.iter(|| encode_all(&page, e, level).unwrap()));
        }
    }
    group.finish();
}

criterion_group!(benches, levels);
criterion_main!(benches);
