//! Prints a busy guard: 1,000 denied CIDR blocks (IPv4 and IPv6, some
//! nested), 50 regex rules (paths, user agents, queries, headers) and a
//! per-address rate zone on every route (fast enough that the benchmark
//! never meets it). It is what `benches/guard.rs` and
//! `scripts/bench-guard` measure; append it to a configuration to try the
//! guard's cost on your own traffic: `cargo run --example busy-guard >> relais.toml`.

/// The `[guard]` table, its rules and the zone, as TOML.
pub fn toml() -> String {
    let mut toml = String::from("[guard]\nlimit_req = [\"per_ip\"]\ndeny = [\n");
    for i in 0..1000u32 {
        if i % 4 == 3 {
            toml.push_str(&format!("  \"2001:db8:{i:x}::/48\",\n"));
        } else {
            toml.push_str(&format!("  \"10.{}.{}.0/{}\",\n", i / 256, i % 256, 20 + i % 9));
        }
    }
    toml.push_str("]\n\n");
    for i in 0..30 {
        toml.push_str(&format!(
            "[[guard.rules]]\npath_regex = \"^/(wp-admin|phpmyadmin|cgi-bin)/{i}[a-z]*\\\\.php\"\n\n"
        ));
    }
    for i in 0..10 {
        toml.push_str(&format!("[[guard.rules]]\nuser_agent_regex = \"(?i)(sqlmap|nikto|masscan){i}\"\n\n"));
    }
    for i in 0..5 {
        toml.push_str(&format!("[[guard.rules]]\nquery_regex = \"(union|select).*{i}\"\n\n"));
    }
    for i in 0..5 {
        toml.push_str(&format!("[[guard.rules]]\nheader = {{ \"x-scan-{i}\" = \"^yes$\" }}\n\n"));
    }
    toml.push_str("[[limit_req]]\nname = \"per_ip\"\nrate = \"1000000r/s\"\nburst = 1000\nnodelay = true\n");
    toml
}

fn main() {
    print!("{}", toml());
}
