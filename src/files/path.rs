//! From a request's path to an open file under the route's directory.
//!
//! The path arrives normalised by the guard; here it is percent-decoded once
//! into a file name, and refused if it holds a NUL, a backslash or a `.` or
//! `..` segment in any encoding. What is left is joined to the directory, and
//! the result is resolved (`canonicalize`): with `symlinks = "inside"` a file
//! whose real path is outside the directory's real path is not found. The
//! file is opened by its real path under the directory with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a link swapped into any part
//! of it after the check is refused, and kept only if it is a regular file. The
//! directory is resolved again for every request, so a deploy that swaps a
//! symbolic link to it is seen at once.
//!
//! Everything here blocks: it runs on tokio's blocking threads.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::HeaderMap;

use crate::compress::{Encoding, accepts, choose};
use crate::config::Symlinks;

use super::Files;

/// `path` percent-decoded once; `None` for a path no file name comes from:
/// invalid escapes, NUL, backslashes, `.` or `..` segments (however encoded).
pub(super) fn decode(path: &str) -> Option<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) || out.contains(&b'\\') || out.split(|&b| b == b'/').any(|s| s == b"." || s == b"..") {
        return None;
    }
    Some(out)
}

/// What a path names under the directory.
pub(super) enum Found {
    File(Opened),
    /// A directory named without its trailing slash.
    Directory,
    /// A directory none of whose `index` files is there.
    NoIndex,
    Missing,
}

/// A file open for reading: the one asked for, or its precompressed sibling.
pub(super) struct Opened {
    pub file: File,
    pub len: u64,
    pub modified: SystemTime,
    /// The sibling's coding, when it is a sibling.
    pub encoding: Option<Encoding>,
    /// The name the content type comes from (the file asked for, not the sibling).
    pub name: PathBuf,
}

/// Looks `rel` (a decoded path) up under `files`' directory; `wants_dir`: the
/// request's path ends with `/`. `accept`: the client's `Accept-Encoding`.
pub(super) fn find(files: &Files, rel: &[u8], wants_dir: bool, accept: &HeaderMap) -> Found {
    let Ok(root) = std::fs::canonicalize(&files.dir) else {
        tracing::warn!(route = %files.label, "the route's directory cannot be resolved");
        return Found::Missing;
    };
    // Relative, so the join stays under the root (no `..` is left in it).
    let start = rel.iter().position(|&b| b != b'/').unwrap_or(rel.len());
    let path = root.join(OsStr::from_bytes(&rel[start..]));
    let Ok(meta) = std::fs::metadata(&path) else { return Found::Missing };
    if meta.is_dir() {
        let outside = || std::fs::canonicalize(&path).map_or(true, |real| !real.starts_with(&root));
        if files.symlinks == Symlinks::Inside && outside() {
            return Found::Missing;
        }
        if !wants_dir {
            return Found::Directory;
        }
        return files
            .index
            .iter()
            .find_map(|name| open(files, &root, &path.join(name.as_str()), accept))
            .map_or(Found::NoIndex, Found::File);
    }
    if wants_dir {
        return Found::Missing;
    }
    open(files, &root, &path, accept).map_or(Found::Missing, Found::File)
}

/// `path` opened, or the sibling the client prefers among those there.
fn open(files: &Files, root: &Path, path: &Path, accept: &HeaderMap) -> Option<Opened> {
    let (file, meta) = open_inside(root, path, files.symlinks)?;
    let plain = Opened::new(file, &meta, None, path.to_path_buf());
    if !files.precompressed || accept.is_empty() {
        return Some(plain);
    }
    let mut siblings: Vec<(Encoding, File, Metadata)> = files
        .preference
        .iter()
        .filter(|&&e| accepts(accept, e))
        .filter_map(|&e| {
            let mut name = OsString::from(path.as_os_str());
            name.push(extension(e));
            open_inside(root, Path::new(&name), files.symlinks).map(|(f, m)| (e, f, m))
        })
        .collect();
    let there: Vec<Encoding> = siblings.iter().map(|s| s.0).collect();
    let Some(chosen) = choose(accept, &there) else { return Some(plain) };
    let at = siblings.iter().position(|s| s.0 == chosen)?;
    let (encoding, file, meta) = siblings.swap_remove(at);
    Some(Opened::new(file, &meta, Some(encoding), plain.name))
}

impl Opened {
    fn new(file: File, meta: &Metadata, encoding: Option<Encoding>, name: PathBuf) -> Opened {
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Opened { file, len: meta.len(), modified, encoding, name }
    }
}

/// The file name ending of a precompressed sibling.
pub(super) fn extension(e: Encoding) -> &'static str {
    match e {
        Encoding::Zstd => ".zst",
        Encoding::Br => ".br",
        Encoding::Gzip => ".gz",
    }
}

/// A regular file at `path` whose real path is under `root` (or anywhere,
/// with `Symlinks::Follow`), open for reading.
fn open_inside(root: &Path, path: &Path, symlinks: Symlinks) -> Option<(File, Metadata)> {
    let real = std::fs::canonicalize(path).ok()?;
    let inside = real.strip_prefix(root).ok();
    if symlinks == Symlinks::Inside && inside.is_none() {
        tracing::debug!("a symbolic link out of a static route's directory refused");
        return None;
    }
    let file = match inside.map(|rel| beneath(root, rel)) {
        Some(Err(rustix::io::Errno::NOSYS)) | None => open_real(&real)?,
        Some(opened) => opened.ok()?,
    };
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta))
}

/// `rel` (a real path: no link in it) opened under `root` by the kernel's
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a link or `..` swapped
/// into any part of it after the check is refused, never followed.
fn beneath(root: &Path, rel: &Path) -> rustix::io::Result<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    // NONBLOCK: opening a FIFO put there does not wait for a writer.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
    rustix::fs::openat2(&dir, rel, flags, Mode::empty(), resolve).map(File::from)
}

/// Where the kernel has no `openat2` (before Linux 5.6), or links may lead
/// anywhere (`symlinks = "follow"`): the real path, with `O_NOFOLLOW` on its
/// last part.
fn open_real(real: &Path) -> Option<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(real).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race the check alone leaves open: a directory of the checked path
    /// swapped for a link out of the root before the open.
    #[test]
    fn a_link_swapped_in_after_the_check_is_refused() {
        let (root, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(root.path().join("a")).unwrap();
        std::fs::write(root.path().join("a/f"), "inside").unwrap();
        std::fs::write(outside.path().join("f"), "secret").unwrap();
        let real_root = std::fs::canonicalize(root.path()).unwrap();
        match beneath(&real_root, Path::new("a/f")) {
            Err(rustix::io::Errno::NOSYS) => return, // no openat2 here: nothing to show
            opened => assert!(opened.is_ok(), "a plain file under the root opens"),
        }
        std::fs::rename(root.path().join("a"), root.path().join("old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("a")).unwrap();
        assert!(std::fs::read(root.path().join("a/f")).is_ok(), "an ordinary open follows the link");
        assert!(beneath(&real_root, Path::new("a/f")).is_err(), "openat2 refuses it");
    }

    #[test]
    fn decoding_refuses_every_way_out() {
        assert_eq!(decode("/a%20b/c.txt").as_deref(), Some(&b"/a b/c.txt"[..]));
        assert_eq!(decode("/%252e%252e/x").as_deref(), Some(&b"/%2e%2e/x"[..]), "decoded once only");
        for bad in [
            "/../x",
            "/a/..",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/..%2fx",
            "/a%2f..%2fx",
            "/.",
            "/a/./b",
            "/%2e/x",
            "/a\\b",
            "/a%5cb",
            "/a%00b",
            "/a%zzb",
            "/a%2",
            "/a%+f",
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
