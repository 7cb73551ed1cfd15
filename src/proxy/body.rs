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
use crate::inject::Rewriter;
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
        rewrite: None,
    })
}

pin_project! {
    /// A body hyper streams: a client's request body, or an upstream
    /// response's, which holds the lease on its upstream connection and gives
    /// it back to the pool when it ends, and may pass through an
    /// `[[inject]]` rewrite on its way.
    pub struct Streamed {
        #[pin]
        body: Incoming,
        lease: Option<Lease<Upload>>,
        tally: Option<Tally>,
        rewrite: Option<Box<Rewrite>>,
    }
}

/// A page being rewritten, and the app's trailers held until the rewriter's
/// last bytes have gone out before them.
struct Rewrite {
    rewriter: Rewriter,
    /// The app's bytes that pass untouched after the rewritten ones.
    untouched: Bytes,
    trailers: Option<http::HeaderMap>,
    done: bool,
}

impl Streamed {
    pub(super) fn leased(body: Incoming, lease: Option<Lease<Upload>>) -> Self {
        Self {
            body,
            lease,
            tally: None,
            rewrite: None,
        }
    }

    /// The same body, rewritten as it streams.
    pub(super) fn rewritten(mut self, rewriter: Rewriter) -> Self {
        self.rewrite = Some(Box::new(Rewrite {
            rewriter,
            untouched: Bytes::new(),
            trailers: None,
            done: false,
        }));
        self
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let Some(rewrite) = this.rewrite.as_deref_mut() else {
            return poll_leased(this.body, this.lease, this.tally.as_ref(), cx);
        };
        let mut body = this.body;
        loop {
            if !rewrite.untouched.is_empty() {
                let untouched = std::mem::take(&mut rewrite.untouched);
                return Poll::Ready(Some(Ok(Frame::data(untouched))));
            }
            if rewrite.done {
                return Poll::Ready(rewrite.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match ready!(poll_leased(
                body.as_mut(),
                this.lease,
                this.tally.as_ref(),
                cx
            )) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    rewrite.done = true;
                    let last = rewrite.rewriter.finish();
                    if last.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let (out, untouched) = rewrite.rewriter.feed(data);
                    rewrite.untouched = untouched;
                    // lol_html may hold an unfinished tag: read on.
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        rewrite.trailers = Some(trailers);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.rewrite {
            Some(rewrite) => {
                rewrite.done && rewrite.trailers.is_none() && rewrite.untouched.is_empty()
            }
            None => self.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rewrite {
            // The length changes as the page is rewritten.
            Some(_) => SizeHint::default(),
            None => self.body.size_hint(),
        }
    }
}

/// One frame of the hyper body, counted, giving the upstream connection back
/// when the body ends (or dropping it on an error).
fn poll_leased(
    mut body: Pin<&mut Incoming>,
    lease: &mut Option<Lease<Upload>>,
    tally: Option<&Tally>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    let frame = ready!(body.as_mut().poll_frame(cx));
    if let (Some(tally), Some(Ok(frame))) = (tally, &frame)
        && let Some(data) = frame.data_ref()
    {
        tally.add(data.len());
    }
    match &frame {
        // A body of known length ends with its last bytes; hyper may not
        // poll again after them.
        Some(Ok(_)) if !body.is_end_stream() => {}
        Some(Ok(_)) | None => {
            if let Some(lease) = lease.take() {
                lease.release();
            }
        }
        // The connection cannot be reused: dropping the lease closes it.
        Some(Err(_)) => drop(lease.take()),
    }
    Poll::Ready(frame)
}
