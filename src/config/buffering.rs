//! `[buffering]`: reading pass-through responses ahead of slow clients.

use std::path::PathBuf;

use serde::Deserialize;

use super::Size;

/// nginx's `proxy_buffering`, `proxy_buffers` and `proxy_max_temp_file_size`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferingConfig {
    /// Read a pass-through response ahead of the client, so the origin's
    /// connection is released while a slow client drains it. On by default.
    pub response: bool,
    /// Memory one response may hold ahead of its client.
    pub response_memory: Size,
    /// Memory all responses together may hold ahead of their clients.
    pub memory: Size,
    /// Past its memory, a response is read ahead into a temp file up to this
    /// size (0: not at all); past that, reading waits for the client.
    pub response_file: Size,
    /// All responses' temp files together, at most: past it read-ahead waits
    /// for the client, as without a file. Default 1GiB.
    pub response_disk: Size,
    /// A request body read whole first (a route's `request_buffering`) keeps this
    /// much in memory, the rest in a temp file (nginx's `client_body_buffer_size`).
    pub request_memory: Size,
    /// All buffered request bodies' temp files together, at most: past it a new
    /// upload is refused (507) before anything goes upstream. Default 1GiB.
    pub request_disk: Size,
    /// Where those temp files go (deleted as soon as they are created). Default: the system's temp folder.
    pub temp_path: Option<PathBuf>,
}

impl Default for BufferingConfig {
    fn default() -> Self {
        BufferingConfig {
            response: true,
            response_memory: Size(256 * 1024),
            memory: Size::mib(64),
            response_file: Size::mib(1024),
            response_disk: Size::mib(1024),
            request_memory: Size::mib(1),
            request_disk: Size::mib(1024),
            temp_path: None,
        }
    }
}
