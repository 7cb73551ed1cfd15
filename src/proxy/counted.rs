//! Bodies counted as they stream, so that a request's log line carries the
//! bytes really sent each way, not only lengths declared up front.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::request_line::RequestLine;

/// A count of bytes, shared with the body that adds to it.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<AtomicU64>);

impl Tally {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project! {
    /// A request body whose data bytes are added to a tally as they are read.
    pub struct Tallied<B> {
        #[pin]
        inner: B,
        tally: Tally,
    }
}

impl<B> Tallied<B> {
    pub fn new(inner: B, tally: Tally) -> Self {
        Self { inner, tally }
    }
}

impl<B: Body> Body for Tallied<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(Some(data))) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.tally.add(bytes::Buf::remaining(data));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is told, once, the bytes a body gave: a request's log line, held in
/// the body itself (no allocation per request).
pub trait EndOfBody {
    fn ended(self, bytes: u64);
}

impl EndOfBody for RequestLine {
    fn ended(self, bytes: u64) {
        self.log(bytes);
    }
}

/// Any closure, boxed.
pub type OnEnd = Box<dyn FnOnce(u64) + Send>;

impl EndOfBody for OnEnd {
    fn ended(self, bytes: u64) {
        self(bytes);
    }
}

pin_project! {
    /// A response body that counts its data bytes and, once, when it ends,
    /// fails or is dropped unfinished (the client left), hands the count to
    /// `on_end`: before its last frame is returned, so the count is known
    /// before the client has it all.
    pub struct Counted<B, E: EndOfBody = RequestLine> {
        #[pin]
        inner: B,
        bytes: u64,
        on_end: Option<E>,
    }

    impl<B, E: EndOfBody> PinnedDrop for Counted<B, E> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                on_end.ended(*this.bytes);
            }
        }
    }
}

impl<B, E: EndOfBody> Counted<B, E> {
    pub fn new(inner: B, on_end: E) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }

    /// A body no one is told of: gatekeeper's own answer, not a request.
    pub fn untold(inner: B) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: None,
        }
    }
}

impl<B: Body, E: EndOfBody> Body for Counted<B, E> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            *this.bytes += data.map_or(0, |d| bytes::Buf::remaining(d) as u64);
        }
        let ended = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            None | Some(Err(_)) => true,
        };
        if ended && let Some(on_end) = this.on_end.take() {
            on_end.ended(*this.bytes);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::Mutex;

    #[tokio::test]
    async fn the_count_is_handed_over_once_at_the_end_or_on_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |seen: &Arc<Mutex<Vec<u64>>>| -> OnEnd {
            let seen = seen.clone();
            Box::new(move |n| seen.lock().expect("not poisoned").push(n))
        };
        let chunks = || {
            let frames: Vec<Result<_, std::convert::Infallible>> = ["ab", "cde", ""]
                .into_iter()
                .map(|s| Ok(Frame::data(Bytes::from(s))))
                .collect();
            StreamBody::new(futures_util::stream::iter(frames))
        };
        let body = Counted::new(chunks(), record(&seen));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcde");
        let mut body = Counted::new(chunks(), record(&seen));
        let _ = body.frame().await;
        drop(body);
        assert_eq!(*seen.lock().expect("not poisoned"), [5, 2]);
    }
}
