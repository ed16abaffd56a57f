//! Every arrow points down: a module of `src/` names only modules of its own
//! floor or below. This reads `src/` as text (comments and literals left
//! out), resolves each `crate::`, `self::` and `super::` path to the top-level
//! module it reaches, groups (`crate::{cache, proxy::X}`) and inline modules
//! included, and fails naming the file and line of every path that climbs.
//! A new top-level module fails here until it is given its floor.

use std::path::{Path, PathBuf};

/// Each top-level module's floor: a module may name its own floor and those
/// beneath, never one above (docs/architecture.md has the picture).
const FLOORS: &[(&str, u8)] = &[
    // The ground floor: leaves every layer may read and write.
    ("config", 0),
    ("metrics", 0),
    ("http", 0),
    ("logs", 0),
    ("service", 0),
    // What proxy/ drives.
    ("cache", 1),
    ("upstream", 1),
    ("guard", 1),
    ("compress", 1),
    ("tls", 1),
    // Authentication: it asks upstreams and takes from the guard's zones.
    ("auth", 1),
    // Static files: a route's directory, never the cache.
    ("files", 1),
    // The cluster's purge log: it applies purges to the cache.
    ("bus", 1),
    ("proxy", 2),
    ("server", 3),
    // The listeners handed to a new binary (a leaf, used by lib.rs only).
    ("upgrade", 3),
    ("admin", 4),
    ("demo", 4),
    // What the benchmarks reach past the proxy: it names the floors below.
    ("internals", 4),
    // The binary's own (main.rs): it reaches the library as `relais::`.
    ("cli", 5),
];

/// lib.rs's own items (`start`, `Handle`) and anything unknown: the top.
const TOP: u8 = u8::MAX;

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(name, _)| *name == module).map(|&(_, f)| f)
}

#[test]
fn every_arrow_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut offences = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let Some(module) = module_path(relative) else { continue };
        let text = std::fs::read_to_string(file).expect("readable source");
        let shown = Path::new("src").join(relative);
        if floor(&module[0]).is_none() {
            offences.push(format!("{}: top-level module `{}` has no floor in FLOORS", shown.display(), module[0]));
            continue;
        }
        for (line, reached) in climbs(&module, &text) {
            offences.push(format!("{}:{line}: `{}` names `{reached}`, a floor above it", shown.display(), module[0]));
        }
    }
    assert!(offences.is_empty(), "arrows pointing up:\n{}", offences.join("\n"));
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// The module a file under `src/` is (`guard/client.rs`: `guard::client`);
/// None for the crate roots, which stand on everything.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// Each path in `text` (a file of module `module`) that reaches a module on a
/// floor above `module`'s own: its line and the top-level name it reaches.
fn climbs(module: &[String], text: &str) -> Vec<(usize, String)> {
    let own = floor(&module[0]).unwrap_or(TOP);
    let code = strip(text);
    let tokens = tokens(&code);
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) as (name, brace depth they opened at).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|b| b.text == "{") => {
                inline.push((tokens[i + 1].text.clone(), depth));
            }
            _ => {}
        }
        let starts = matches!(t.text.as_str(), "crate" | "self" | "super")
            && tokens.get(i + 1).is_some_and(|c| c.text == "::")
            && (i == 0 || tokens[i - 1].text != "::");
        if !starts {
            continue;
        }
        let mut here: Vec<String> = module.to_vec();
        here.extend(inline.iter().map(|(name, _)| name.clone()));
        for (line, reached) in resolve(&here, &tokens[i..]) {
            if floor(&reached).unwrap_or(TOP) > own {
                found.push((line, reached));
            }
        }
    }
    found
}

/// The top-level modules a path starting at `path[0]` reaches from module
/// `here`, each with the line of the segment that names it.
fn resolve(here: &[String], path: &[Token]) -> Vec<(usize, String)> {
    let mut at = here.to_vec();
    let mut i = 0;
    while path.get(i).is_some_and(|t| t.text == "super") && path.get(i + 1).is_some_and(|t| t.text == "::") {
        if at.pop().is_none() {
            return Vec::new(); // Above the crate: not valid Rust, the compiler says so.
        }
        i += 2;
    }
    if i == 0 {
        if path[0].text == "crate" {
            at.clear();
        }
        i = 2;
    }
    if let Some(first) = at.first() {
        return vec![(path[0].line, first.clone())];
    }
    // At the crate root: the next segment, or the first segment of each item of a group.
    match path.get(i) {
        Some(t) if t.text == "{" => group_heads(&path[i..]),
        Some(t) => vec![(t.line, t.text.clone())],
        None => Vec::new(),
    }
}

/// The first segment of each item of the group opening at `group[0]`.
fn group_heads(group: &[Token]) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_starts = false;
    for t in group {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            break;
        }
        if depth == 1 && matches!(t.text.as_str(), "{" | ",") {
            item_starts = true;
        } else if item_starts {
            // `self` in a group at the root names the root itself: no one floor.
            if t.text != "self" {
                heads.push((t.line, t.text.clone()));
            }
            item_starts = false;
        }
    }
    heads
}

struct Token {
    text: String,
    line: usize,
}

/// Identifiers, `::`, and single punctuation, with their line.
fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line = 1;
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token { text: chars[start..i].iter().collect(), line });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token { text: "::".into(), line });
            i += 2;
        } else {
            out.push(Token { text: c.to_string(), line });
            i += 1;
        }
    }
    out
}

/// `text` with comments, strings and character literals blanked (newlines
/// kept, so lines still count): a path in a doc comment is not an import.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (i == 0 || !ident(c[i - 1])) && matches!(c.get(i + 1), Some('#' | '"')) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < c.len()
                && !(c[j] == '"' && c[j + 1..].iter().take(hashes).filter(|&&h| h == '#').count() == hashes)
            {
                j += 1;
            }
            for &ch in &c[i..(j + 1 + hashes).min(c.len())] {
                blank(&mut out, ch);
            }
            i = j + 1 + hashes;
        } else if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                let n = if c[i] == '\\' { 2 } else { 1 };
                for &ch in &c[i..(i + n).min(c.len())] {
                    blank(&mut out, ch);
                }
                i += n;
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{1F600}'), not a lifetime.
            let mut j = i + 1;
            if c[j] == '\\' {
                j += 2;
            }
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            for _ in i..=j.min(c.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

// The check, checked: each way of climbing is caught, and what only looks
// like one is not.

fn reached(file: &str, text: &str) -> Vec<(usize, String)> {
    climbs(&module_path(Path::new(file)).expect("a module"), text)
}

#[test]
fn catches_a_plain_path() {
    let text = "use crate::config::Config;\nuse crate::proxy::headers::X;\n";
    assert_eq!(reached("guard/client.rs", text), [(2, "proxy".to_string())]);
}

#[test]
fn catches_a_path_in_an_expression() {
    let text = "fn f() {\n    let r = crate::server::bind(a);\n}\n";
    assert_eq!(reached("cache/mod.rs", text), [(2, "server".to_string())]);
}

#[test]
fn catches_a_group_over_lines() {
    let text = "use crate::{\n    cache::Cache,\n    admin::Admin,\n    proxy::{self, Conn},\n};\n";
    assert_eq!(reached("upstream/pool.rs", text), [(3, "admin".to_string()), (4, "proxy".to_string())]);
}

#[test]
fn catches_super_climbing_to_the_root() {
    assert_eq!(reached("guard/client.rs", "use super::super::proxy::X;"), [(1, "proxy".to_string())]);
    assert_eq!(reached("metrics.rs", "use super::admin;"), [(1, "admin".to_string())]);
    assert_eq!(reached("cache/disk/load.rs", "use super::super::Cache;"), []);
}

#[test]
fn counts_inline_modules() {
    let text =
        "fn f() {}\nmod tests {\n    use super::super::super::super::proxy;\n    use super::super::super::Cache;\n}\n";
    assert_eq!(reached("cache/disk/load.rs", text), [(3, "proxy".to_string())]);
}

#[test]
fn catches_the_ground_floor_reaching_up() {
    assert_eq!(reached("config/mod.rs", "use crate::compress::Encoding;"), [(1, "compress".to_string())]);
    assert_eq!(reached("cache/mod.rs", "use crate::{config, metrics, http::body::Body};"), []);
}

#[test]
fn ignores_comments_and_literals() {
    let text = "//! see crate::proxy::handle\n/* crate::admin */\nconst S: &str = \"crate::server\";\nconst R: &str = r#\"crate::proxy\"#;\nfn f<'a>(c: char) -> bool { c == '\"' }\nuse crate::config;\n";
    assert_eq!(reached("tls/mod.rs", text), []);
}

#[test]
fn higher_floors_may_look_down() {
    assert_eq!(reached("server/mod.rs", "use crate::proxy::{self, Conn};\nuse crate::tls::Tls;"), []);
    assert_eq!(reached("admin/mod.rs", "use crate::server::accept;\nuse crate::proxy::Pipeline;"), []);
}

#[test]
fn a_floor_cannot_be_skipped_upwards_by_self() {
    assert_eq!(reached("proxy/mod.rs", "use self::cache::serve;"), []);
    assert_eq!(reached("proxy/mod.rs", "use crate::admin::Admin;"), [(1, "admin".to_string())]);
}
