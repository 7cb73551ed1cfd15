//! The one body type that flows through the proxy in both directions: a
//! streamed hyper body, or bytes gatekeeper holds (a gated request after
//! stripping, or an answer of its own).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::counted::Tally;
use super::upstream::Upload;
use crate::pool::Lease;

pub type ProxyBody = Either<Streamed, Full<Bytes>>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> ProxyBody {
    Either::Right(Full::new(Bytes::new()))
}

/// A client's request body, streamed on, its bytes added to `tally`.
pub fn streamed(body: Incoming, tally: Tally) -> ProxyBody {
    Either::Left(Streamed {
        body,
        lease: None,
        tally: Some(tally),
    })
}

pin_project! {
    /// A body hyper streams: a client's request body, or an upstream
    /// response's, which holds the lease on its upstream connection and gives
    /// it back to the pool when it ends.
    pub struct Streamed {
        #[pin]
        body: Incoming,
        lease: Option<Lease<Upload>>,
        tally: Option<Tally>,
    }
}

impl Streamed {
    pub(super) fn leased(body: Incoming, lease: Option<Lease<Upload>>) -> Self {
        Self {
            body,
            lease,
            tally: None,
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        if let (Some(tally), Some(Ok(frame))) = (this.tally.as_ref(), &frame)
            && let Some(data) = frame.data_ref()
        {
            tally.add(data.len());
        }
        match &frame {
            // A body of known length ends with its last bytes; hyper may not
            // poll again after them.
            Some(Ok(_)) if !this.body.is_end_stream() => {}
            Some(Ok(_)) | None => {
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
            }
            // The connection cannot be reused: dropping the lease closes it.
            Some(Err(_)) => drop(this.lease.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
