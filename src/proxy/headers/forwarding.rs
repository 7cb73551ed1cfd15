//! `X-Forwarded-*`: who the client is, as far as gatekeeper can tell.
//!
//! A peer in `server.trusted_proxies` is another proxy whose `X-Forwarded-For`
//! chain is believed; from anyone else the chain is a claim an attacker writes,
//! so it is replaced by the peer's address. Either way the upstream gets exactly
//! one `X-Forwarded-For` line (several lines are joined; RFC 9110 §5.3).

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName, HeaderValue};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
}

/// The client's address: the peer itself, or, behind trusted proxies, the
/// right-most address in the chain that is not a trusted proxy.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for hop in chain(headers).rev() {
        match hop.parse::<IpAddr>() {
            Ok(addr) => {
                client = addr.to_canonical();
                if !is_trusted(client, trusted) {
                    break;
                }
            }
            // An unparsable hop ends what can be believed.
            Err(_) => break,
        }
    }
    client
}

fn chain(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

/// The text X-Forwarded-For gives for `peer`: made once per connection, since
/// formatting an address for every request shows in profiles.
pub fn peer_header(peer: IpAddr) -> HeaderValue {
    // An IP address's text form is always a valid header value.
    HeaderValue::from_str(&peer.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Rewrites the forwarding headers for the upstream. `peer_text` is
/// [`peer_header`] of `peer`; `proto` is the scheme the client used to reach
/// gatekeeper; `host` the request's authority.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_text: &HeaderValue,
    trusted: &[IpNet],
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let trusted_peer = is_trusted(peer, trusted);

    let xff = if trusted_peer {
        let mut hops: Vec<&str> = chain(headers).collect();
        hops.extend(peer_text.to_str().ok());
        HeaderValue::from_str(&hops.join(", ")).ok()
    } else {
        None
    };
    headers.insert(X_FORWARDED_FOR, xff.unwrap_or_else(|| peer_text.clone()));

    // A trusted proxy in front knows the original scheme and host; otherwise
    // these are ours to state.
    if !(trusted_peer && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted_peer && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST, v);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !trusted_peer {
        // RFC 7239's header carries the same claims; from an untrusted peer it is spoofed.
        headers.remove(FORWARDED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    fn headers_with_xff(lines: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(X_FORWARDED_FOR, HeaderValue::from_static(l));
        }
        h
    }

    #[test]
    fn untrusted_peer_chain_is_replaced_by_peer() {
        let mut h = headers_with_xff(&["6.6.6.6", "7.7.7.7"]);
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        set_forwarding_headers(
            &mut h,
            peer,
            &peer_header(peer),
            &nets(&["10.0.0.0/8"]),
            "https",
            Some(HeaderValue::from_static("a.test")),
        );
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "a.test");
        assert_eq!(
            client_addr(
                peer,
                &headers_with_xff(&["6.6.6.6"]),
                &nets(&["10.0.0.0/8"])
            ),
            peer
        );
    }

    #[test]
    fn trusted_peer_chain_is_kept_on_one_line_with_peer_appended() {
        let mut h = headers_with_xff(&["198.51.100.1, 10.1.1.1", "10.2.2.2"]);
        let peer: IpAddr = "10.9.9.9".parse().expect("ip");
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_addr(peer, &h, &trusted).to_string(), "198.51.100.1");
        set_forwarding_headers(&mut h, peer, &peer_header(peer), &trusted, "http", None);
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(
            h[X_FORWARDED_FOR],
            "198.51.100.1, 10.1.1.1, 10.2.2.2, 10.9.9.9"
        );
    }

    #[test]
    fn ipv4_mapped_peer_is_matched_and_forwarded_as_ipv4() {
        let peer: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert!(is_trusted(peer, &nets(&["10.0.0.0/8"])));
        assert_eq!(peer_header(peer), "10.0.0.1");
    }
}
