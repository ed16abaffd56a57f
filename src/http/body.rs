//! The one body type relais sends, in both directions.
//!
//! An enum rather than a box so the common cases (a streamed body from either
//! engine, a short fixed body, nothing) cost no allocation and no dynamic dispatch.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A message's declared body length: its one `Content-Length`, if valid. (A
/// request's is read by hyper and known from its body's size hint.)
pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let one = values.next()?;
    if values.next().is_some() {
        return None;
    }
    one.to_str().ok()?.trim().parse().ok()
}

pin_project_lite::pin_project! {
    #[project = BodyProj]
    pub enum Body {
        Empty,
        Full { data: Option<Bytes> },
        Incoming { #[pin] inner: Incoming },
        Own { #[pin] inner: super::h1::incoming::Incoming },
        Boxed { #[pin] inner: BoxBody<Bytes, BoxError> },
    }
}

impl Body {
    pub(crate) fn empty() -> Body {
        Body::Empty
    }

    pub(crate) fn full(data: impl Into<Bytes>) -> Body {
        let data: Bytes = data.into();
        if data.is_empty() { Body::Empty } else { Body::Full { data: Some(data) } }
    }

    pub(crate) fn channel(rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>) -> Body {
        Body::boxed(Channel(rx))
    }

    pub(crate) fn boxed<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed { inner: BoxBody::new(body.map_err(Into::into)) }
    }
}

/// A body fed through a channel by a task of its own; an error ends it.
pub(crate) struct Channel(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}

/// `first`'s data, then `second`'s (trailers dropped): a stored part and the
/// piece that completes it, in order.
pub(crate) fn chain(first: Body, second: Body) -> Body {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    let data = first.into_data_stream().chain(second.into_data_stream());
    Body::boxed(http_body_util::StreamBody::new(data.map(|d| d.map(Frame::data))))
}

impl From<Incoming> for Body {
    fn from(inner: Incoming) -> Body {
        Body::Incoming { inner }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            BodyProj::Empty => Poll::Ready(None),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Incoming { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Own { inner } => inner.poll_frame(cx),
            BodyProj::Boxed { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full { data } => data.is_none(),
            Body::Incoming { inner } => inner.is_end_stream(),
            Body::Own { inner } => inner.is_end_stream(),
            Body::Boxed { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Incoming { inner } => inner.size_hint(),
            Body::Own { inner } => inner.size_hint(),
            Body::Boxed { inner } => inner.size_hint(),
        }
    }
}
