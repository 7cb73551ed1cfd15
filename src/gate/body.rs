//! A gated body: read whole within its bounds and reservations, and the
//! request as forwarded, whose bytes hold those places until the upstream
//! is done with them.

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{Request, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use super::admission::{ConnAdmission, FREE_PER_BODY, Reservation};
use super::{Admitted, Gate, Validate};
use crate::http_common::{HeldBody, frame_passed, whole_body};
use crate::refusal::Refusal;

impl<V: Validate> Gate<V> {
    /// Reads the whole body, refusing beyond `max_body` (413), beyond the
    /// body budget (503) or `body_timeout` (408). Waiting for one of the
    /// connection's places to buffer counts against `body_timeout`. Without
    /// `admission` (a request that did not come through a listener), nothing
    /// is reserved.
    pub(super) async fn read_body<B: Body<Data = Bytes>>(
        &self,
        parts: &Parts,
        body: B,
        admission: Option<&ConnAdmission>,
    ) -> Result<(Bytes, Held), Refusal> {
        let too_large = || Refusal::BodyTooLarge {
            max_body: self.max_body,
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body) {
            return Err(too_large());
        }
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let place = match admission {
            Some(a) => {
                match tokio::time::timeout_at(deadline, a.bodies.clone().acquire_owned()).await {
                    Ok(Ok(place)) => Some(place),
                    Ok(Err(_)) => {
                        return Err(Refusal::CaptchaUnavailable("the connection is closing"));
                    }
                    Err(_) => return Err(Refusal::BodyTimeout),
                }
            }
            None => None,
        };
        let mut reservation = admission.map(|a| a.shared.budget.reservation());
        // Bytes beyond a body's free allowance are reserved before they are
        // read: all at once by Content-Length, else as they arrive.
        let reserve = |len: u64, reservation: &mut Option<Reservation>| match reservation {
            Some(r) => {
                let owed = len.saturating_sub(FREE_PER_BODY).saturating_sub(r.bytes());
                owed == 0 || r.grow(owed)
            }
            None => true,
        };
        if let Some(len) = declared
            && !reserve(len, &mut reservation)
        {
            return Err(Refusal::BodyBudgetExhausted);
        }
        // Within max_body, so it fits in memory.
        let capacity = usize::try_from(declared.unwrap_or(0)).unwrap_or(0);
        let read = async {
            let mut body = std::pin::pin!(body);
            // Copied out of hyper's buffers: what is held is exactly what was reserved.
            let mut buf = BytesMut::with_capacity(capacity);
            while let Some(frame) = body.as_mut().frame().await {
                let frame = frame.map_err(|_| Refusal::BodyUnreadable)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let len = (buf.len() + data.len()) as u64;
                if len > self.max_body {
                    return Err(too_large());
                }
                if !reserve(len, &mut reservation) {
                    return Err(Refusal::BodyBudgetExhausted);
                }
                buf.extend_from_slice(&data);
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(bytes)) => Ok((bytes, Held { reservation, place })),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err(Refusal::BodyTimeout),
        }
    }
}

/// What a buffered body holds while its bytes exist: its reservation from
/// the budget, and its connection's place to buffer one (see `admission`).
pub(super) struct Held {
    reservation: Option<Reservation>,
    place: Option<OwnedSemaphorePermit>,
}

/// The forwarded body's bytes, holding their places until the upstream is
/// done with them (the last reference drops).
fn holding(body: Bytes, held: Held) -> Bytes {
    struct Owner {
        body: Bytes,
        _held: Held,
    }
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.body
        }
    }
    if held.reservation.is_none() && held.place.is_none() {
        return body;
    }
    Bytes::from_owner(Owner { body, _held: held })
}

/// The request as the upstream will see it: fields gone, length recomputed.
pub(super) fn forwardable(
    mut parts: Parts,
    Admitted {
        body,
        held,
        query,
        verdict,
    }: Admitted,
) -> Request<HeldBody> {
    if parts.uri.query().is_some() {
        let path = parts.uri.path();
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        // The stripped query is a subset of a valid one, so this parses; if it
        // ever did not, dropping the query is the safe side (no field leaks).
        parts.uri = Uri::try_from(target)
            .or_else(|_| Uri::try_from(path.to_owned()))
            .unwrap_or_else(|_| Uri::from_static("/"));
    }
    // A bodiless request (GET with the proof in the query) stays bodiless.
    frame_passed(&mut parts.headers, body.len(), verdict);
    Request::from_parts(parts, whole_body(holding(body, held)))
}
