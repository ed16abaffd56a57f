//! Records the commit relais is built from (`git rev-parse --short HEAD`) as
//! `BUILD_GIT_COMMIT`, for `relais_build_info`; "unknown" outside a git
//! checkout (a crate tarball has no `.git`) or without git. Not `RELAIS_*`:
//! `cargo run` and `cargo test` pass it to the process too, which would take
//! it for a misspelt setting.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
        let text = String::from_utf8(out.stdout).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    };
    // Built again when HEAD moves: every commit and checkout writes to its log.
    if let Some(log) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={log}");
    }
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
}
