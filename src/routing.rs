//! Route matching: which `[[route]]`, if any, protects a request.
//!
//! Precedence, whatever the order in the file: a route with a `host` beats one
//! without; then an exact `path` beats any `prefix`; then the longest prefix wins.
//! A matching route whose `methods` do not include the request's method does not
//! apply, and the request is proxied untouched.

use http::Method;

use crate::config::{PathMatch, Route};

/// Routes sorted once by precedence, so matching is a first-hit scan.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        // Sort key: host-bound first, exact before prefix, longer prefix first.
        routes.sort_by_key(|r| {
            let (exact, len) = match &r.path {
                PathMatch::Exact(p) => (true, p.len()),
                PathMatch::Prefix(p) => (false, p.len()),
            };
            (r.host.is_none(), !exact, std::cmp::Reverse(len))
        });
        Self { routes }
    }

    /// The route that gates this request, if any. `host` is the request's host
    /// without port, in any case.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Route> {
        self.routes.iter().find(|route| {
            let host_ok = match (&route.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            let path_ok = match &route.path {
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            };
            host_ok && path_ok && route.methods.contains(method)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnError;

    fn route(path: PathMatch, host: Option<&str>, methods: &[Method], origin: &str) -> Route {
        Route {
            path,
            host: host.map(str::to_owned),
            methods: methods.to_vec(),
            captchas: Vec::new(),
            on_error: OnError::Allow,
            reject_redirect: None,
            origin: origin.to_owned(),
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route(
                PathMatch::Prefix("/api/".into()),
                None,
                &[Method::POST],
                "prefix-api",
            ),
            route(
                PathMatch::Prefix("/api/v2/".into()),
                None,
                &[Method::POST],
                "prefix-api-v2",
            ),
            route(
                PathMatch::Exact("/api/v2/login".into()),
                None,
                &[Method::POST],
                "exact-login",
            ),
            route(
                PathMatch::Exact("/login".into()),
                Some("www.example.com"),
                &[Method::POST],
                "host-login",
            ),
            route(
                PathMatch::Prefix("/".into()),
                Some("admin.example.com"),
                &[Method::POST, Method::GET],
                "host-admin",
            ),
        ])
    }

    fn origin(t: &RouteTable, host: Option<&str>, path: &str, m: Method) -> Option<String> {
        t.find(host, path, &m).map(|r| r.origin.clone())
    }

    #[test]
    fn exact_path_beats_longer_prefix() {
        assert_eq!(
            origin(&table(), None, "/api/v2/login", Method::POST).as_deref(),
            Some("exact-login")
        );
    }

    #[test]
    fn longest_prefix_wins_regardless_of_file_order() {
        let t = table();
        assert_eq!(
            origin(&t, None, "/api/v2/x", Method::POST).as_deref(),
            Some("prefix-api-v2")
        );
        assert_eq!(
            origin(&t, None, "/api/x", Method::POST).as_deref(),
            Some("prefix-api")
        );
    }

    #[test]
    fn route_with_host_beats_route_without() {
        let t = table();
        assert_eq!(
            origin(&t, Some("ADMIN.example.com"), "/api/x", Method::POST).as_deref(),
            Some("host-admin")
        );
        assert_eq!(
            origin(&t, Some("www.example.com"), "/login", Method::POST).as_deref(),
            Some("host-login")
        );
        assert_eq!(
            origin(&t, Some("other.example.com"), "/login", Method::POST),
            None
        );
    }

    #[test]
    fn method_outside_the_route_is_not_gated() {
        assert_eq!(origin(&table(), None, "/api/v2/login", Method::GET), None);
    }

    #[test]
    fn exact_path_does_not_match_a_longer_path() {
        assert_eq!(
            origin(
                &table(),
                Some("www.example.com"),
                "/login/extra",
                Method::POST
            ),
            None
        );
    }
}
