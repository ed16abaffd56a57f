//! A fill's ticket, and the decision to store what the origin sent.
//!
//! A [`Ticket`] is taken as an origin request leaves: the slot its answer
//! goes to, the purge epoch and the clock then. It goes with the response to
//! [`Ticket::store`], which decides whether the response is kept (its policy,
//! the size limits, a share of `cache.fill_memory`, a part that is exactly its
//! range, the URL's Vary record), then into the commit that runs once the body
//! has arrived whole. A purge since the ticket was taken keeps the response
//! out of the cache: [`Ticket::purged`] is the one place that race is decided,
//! for new entries and for entries refreshed by a 304 alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use cache_policy::{Bypass, CacheOutcome, CacheStatus, Policy};
use http::header;
use http::request::Parts;
use http::{Response, StatusCode};

use super::disk::DiskWriter;
use super::origin::{Answer, Origin};
use super::phase::Slot;
use super::spill::{self, Spill};
use super::tee::{Remembered, Storing, TeeBody};
use super::{Cache, Entry, Stored, VaryRecord, key};
use crate::http::body::Body;

/// One origin fetch's claim on the cache, from the request's start to its commit.
pub(super) struct Ticket {
    slot: Slot,
    /// The purge epoch when the fetch began.
    epoch: u64,
    /// The clock when the fetch began.
    pub(super) request_time: SystemTime,
}

/// An answer from the origin (or the store), and what the cache made of it.
pub(super) struct Fetched {
    pub(super) answer: Answer,
    pub(super) kept: Kept,
}

/// Whether an answer is kept, and so whether collapsed requests may share it.
pub(super) enum Kept {
    /// Being stored as it streams (`Storing` says whether it still is).
    Storing(Storing),
    /// Made from a stored entry (refreshed by a 304, or standing in for an error).
    Entry,
    /// Not stored, for this reason: the key is uncacheable for a while (hit-for-pass).
    Refused(Bypass),
    /// Not stored, and no verdict on the URL (a HEAD of a known pass, a slice
    /// the origin did not send).
    Passed,
}

impl Kept {
    /// Whether collapsed requests may share the answer.
    pub(super) fn shareable(&self) -> bool {
        matches!(self, Kept::Storing(_) | Kept::Entry)
    }
}

impl Fetched {
    pub(super) fn passed(answer: Answer, status: CacheStatus) -> Fetched {
        Fetched { answer: Answer { cache: Some(status), ..answer }, kept: Kept::Passed }
    }

    pub(super) fn entry(answer: Answer) -> Fetched {
        Fetched { answer, kept: Kept::Entry }
    }
}

impl Ticket {
    /// Taken just before the request leaves for the origin.
    pub(super) fn new(cache: &Cache, slot: Slot) -> Ticket {
        Ticket { slot, epoch: cache.purge_epoch(), request_time: SystemTime::now() }
    }

    pub(super) fn key(&self) -> &str {
        &self.slot.key
    }

    pub(super) fn url(&self) -> &str {
        &self.slot.url
    }

    /// Given back unused: the fetch is asked again, under a ticket of its own.
    pub(super) fn into_slot(self) -> Slot {
        self.slot
    }

    /// The purge race: whether a purge since this fetch began covers `entry`.
    fn purged(cache: &Cache, epoch: u64, entry: &Entry) -> bool {
        cache.purged_since(epoch, &entry.url, &entry.tags)
    }

    /// After a 304: the stored entry's new headers and policy, unless purged meanwhile.
    pub(super) async fn refresh(self, cache: &Cache, refreshed: Entry) {
        if !Ticket::purged(cache, self.epoch, &refreshed) {
            cache.refresh(self.slot.key, Stored::Entry(refreshed)).await;
        }
    }

    /// Decides whether `answer` (from the origin, its head arrived at
    /// `response_time`) is stored; if so, tees its body into the cache.
    /// `head` is the request as the fill asked it (GET).
    pub(super) fn store<O: Origin>(
        self,
        cache: &Arc<Cache>,
        origin: &O,
        head: &Parts,
        answer: Answer,
        response_time: SystemTime,
        status: CacheStatus,
    ) -> Fetched {
        let Ticket { slot, epoch, request_time } = self;
        let (res_parts, body) = answer.response.into_parts();
        let server = answer.upstream;
        let rules = origin.rules();
        let pass = |res_parts, body, status: CacheStatus, reason: Bypass| Fetched {
            answer: Answer {
                response: origin.pass(Response::from_parts(res_parts, body)),
                upstream: server.clone(),
                cache: Some(status.detail(reason.as_str())),
            },
            kept: Kept::Refused(reason),
        };
        let from_owner = res_parts.extensions.get::<super::FromOwner>().map(|o| o.keep);
        if let Some(None) = from_owner {
            // The owner keeps it; this node only passes it on.
            let response = origin.pass(Response::from_parts(res_parts, body));
            let answer = Answer { response, upstream: server, cache: Some(status.detail("owner")) };
            return Fetched { answer, kept: Kept::Passed };
        }
        let policy = match Policy::new(head, &res_parts, rules, request_time, response_time) {
            Ok(mut policy) => {
                if let Some(Some(keep)) = from_owner {
                    policy.cap_lifetime(keep);
                }
                policy
            }
            Err(reason) => {
                if matches!(status.outcome, CacheOutcome::Expired | CacheOutcome::Request) {
                    // The stored response was replaced by one we may not keep.
                    let cache = cache.clone();
                    tokio::spawn(async move { cache.remove(&slot.key).await });
                }
                return pass(res_parts, body, status, reason);
            }
        };
        let expected = crate::http::body::content_length(&res_parts.headers);
        // A part is kept only if its body is exactly the range it claims.
        let part =
            cache_policy::content_range(&res_parts.headers).filter(|_| res_parts.status == StatusCode::PARTIAL_CONTENT);
        if part.is_some_and(|p| expected.is_some_and(|n| n != p.len())) {
            return pass(res_parts, body, status, Bypass::Status);
        }
        let limit = cache.max_object_size;
        if expected.is_some_and(|n| n > limit) {
            return pass(res_parts, body, status, Bypass::TooLarge);
        }
        // A known length takes its share of the memory for bodies being stored now, or goes
        // to disk (as does a large one), or is not stored.
        let disk = cache.disk.clone();
        let reserved = match expected {
            Some(n) if disk.is_some() && n > spill::STREAM_ABOVE => None,
            Some(n) => match cache.fill_budget.reserve(n) {
                None if disk.is_none() => return pass(res_parts, body, status, Bypass::FillMemory),
                r => r,
            },
            None => None,
        };

        let mut names = cache_policy::vary_names(&res_parts.headers).unwrap_or_default();
        if origin.encodes() {
            // Asked for without it: the one copy serves every Accept-Encoding.
            names.retain(|n| n != header::ACCEPT_ENCODING);
        }
        // The URL's Vary record is stored once, when it is new: a flood of variants
        // rewrites nothing at the primary key.
        let (key, record) = if names.is_empty() {
            (slot.primary.clone(), None)
        } else {
            let (record, new) = match slot.vary {
                Some(v) if v.names == names => (v, false),
                _ => (VaryRecord { names, generation: generation(), url: slot.url.clone() }, true),
            };
            let key = key::variant(&slot.primary, record.generation, &record.names, &head.headers);
            (key, new.then_some(record))
        };
        let entry = Entry {
            status: res_parts.status,
            headers: cache_policy::storable_headers(&res_parts.headers, rules),
            body: Bytes::new(),
            file: None,
            tags: Entry::tags_of(&res_parts.headers),
            policy,
            url: slot.url,
            stored_at: response_time,
        };
        // A body of unknown length may still prove too large: only a known length is claimed stored.
        let status = if expected.is_some() { status.stored() } else { status };
        let status = status.ttl(entry.policy.ttl_secs(response_time));
        let primary = slot.primary;
        let spill = disk.map(|disk| {
            let (committer, entry, key, record, primary) =
                (cache.clone(), entry.clone(), key.clone(), record.clone(), primary.clone());
            let commit = Box::new(move |file: DiskWriter| {
                if part.is_some_and(|p| p.len() != file.len()) {
                    return;
                }
                tokio::spawn(async move {
                    if Ticket::purged(&committer, epoch, &entry) {
                        tracing::debug!(url = %entry.url, "purged while in flight; not stored");
                        return;
                    }
                    let record = record.map(|r| (primary, Stored::Vary(r)));
                    committer.put_file(epoch, (key, Stored::Entry(entry)), file, record).await;
                });
            });
            Spill { disk, expected, limit, commit }
        });
        let committer = cache.clone();
        let remembered = Remembered::default();
        let in_memory = remembered.clone();
        let commit = Box::new(move |body: Bytes| {
            if part.is_some_and(|p| p.len() != body.len() as u64) {
                tracing::debug!(url = %entry.url, "a part whose body is not its range; not stored");
                in_memory.done();
                return;
            }
            tokio::spawn(async move {
                if Ticket::purged(&committer, epoch, &entry) {
                    tracing::debug!(url = %entry.url, "purged while in flight; not stored");
                    in_memory.done();
                    return;
                }
                let mut values = vec![(key, Stored::Entry(Entry { body, ..entry }))];
                if let Some(record) = record {
                    values.push((primary, Stored::Vary(record)));
                }
                committer.put_all_telling(epoch, values, &in_memory).await;
                in_memory.done();
            });
        });
        let tee = TeeBody::new(body, (expected, limit), (cache.fill_budget.clone(), reserved), commit, spill);
        let storing = tee.storing().with(remembered);
        Fetched {
            answer: Answer {
                response: Response::from_parts(res_parts, Body::boxed(tee)),
                upstream: server,
                cache: Some(status),
            },
            kept: Kept::Storing(storing),
        }
    }
}

/// A new Vary generation: unique within this process and unlikely to repeat across restarts.
fn generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}
