//! Route matching: which `[[route]]`, if any, protects a request.
//!
//! Precedence, whatever the order in the file: a route with a `host` beats one
//! without; then an exact `path` beats any `prefix`; then the longest prefix wins.
//! A matching route whose `methods` do not include the request's method does not
//! apply, and the request is proxied untouched.
//!
//! Matching errs toward gating, because an app may read a request more
//! loosely than the route is written: paths in normal form ([`crate::normal_path`]), and
//! unless a route is `strict`, compared without case, trailing slash or
//! `;parameters`; hosts without case or trailing dot; HEAD wherever GET is
//! gated, and a method-override header or `_method` counts as the method too
//! ([`request`]).

pub mod request;

use http::Method;

use crate::config::{Methods, PathMatch, Route};
use crate::normal_path::NormalPath;
pub use request::{MethodError, RequestMethods, normal_host};

/// Routes sorted once by precedence, so matching is a first-hit scan. `T`
/// is a route or something that carries one (an `[[inject]]` rule).
#[derive(Debug, Clone)]
pub struct RouteTable<T = Route> {
    routes: Vec<T>,
}

impl<T: AsRef<Route>> RouteTable<T> {
    pub fn new(mut routes: Vec<T>) -> Self {
        // Sort key: host-bound first, exact before prefix, longer prefix first.
        routes.sort_by_key(|r| {
            let r = r.as_ref();
            let (exact, len) = match &r.path {
                PathMatch::Exact(p) => (true, p.len()),
                PathMatch::Prefix(p) => (false, p.len()),
            };
            (r.host.is_none(), !exact, std::cmp::Reverse(len))
        });
        Self { routes }
    }

    /// The route that gates this request, if any. `host` is the request's
    /// host without port or trailing dot, in any case.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &NormalPath<'_>,
        methods: &RequestMethods,
    ) -> Option<&T> {
        self.find_where(host, path, |route| {
            methods.any(|m| route.methods.contains(m))
        })
    }

    /// The first entry whose host and path match, whatever the method.
    pub fn find_any_method(&self, host: Option<&str>, path: &NormalPath<'_>) -> Option<&T> {
        self.find_where(host, path, |_| true)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn find_where(
        &self,
        host: Option<&str>,
        path: &NormalPath<'_>,
        applies: impl Fn(&Route) -> bool,
    ) -> Option<&T> {
        // Computed once, and only if some lenient route is looked at.
        let mut key = None;
        self.routes.iter().find(|entry| {
            let route = entry.as_ref();
            let host_ok = match (&route.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            if !host_ok || !applies(route) {
                return false;
            }
            if route.strict {
                return match &route.path {
                    PathMatch::Exact(p) => *path.path == **p,
                    PathMatch::Prefix(p) => path.path.starts_with(p.as_str()),
                };
            }
            let key: &str = key.get_or_insert_with(|| path.match_key());
            match &route.path {
                PathMatch::Exact(p) => key.eq_ignore_ascii_case(lenient(p)),
                PathMatch::Prefix(p) => prefix_matches(key, p),
            }
        })
    }
}

impl AsRef<Route> for Route {
    fn as_ref(&self) -> &Route {
        self
    }
}

/// A route path as lenient matching compares it: without a trailing slash.
fn lenient(p: &str) -> &str {
    p.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(p)
}

/// `prefix = "/api/"` covers `/api` itself and everything below it;
/// `prefix = "/api"` is a plain string prefix (it also covers `/apix`).
fn prefix_matches(key: &str, prefix: &str) -> bool {
    let starts = |p: &str| {
        key.len() >= p.len() && key.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    match prefix.strip_suffix('/') {
        Some("") => true,
        Some(dir) => starts(dir) && (key.len() == dir.len() || key.as_bytes()[dir.len()] == b'/'),
        None => starts(prefix),
    }
}

impl Methods {
    /// Whether a request with this method is gated by the route.
    pub fn contains(&self, method: &Method) -> bool {
        match self {
            Self::Listed(list) => list.contains(method),
            Self::Unsafe => !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnError;
    use crate::normal_path::PathRules;
    use http::HeaderMap;

    fn route(path: PathMatch, host: Option<&str>, methods: &[Method], origin: &str) -> Route {
        Route {
            path,
            host: host.map(str::to_owned),
            methods: Methods::Listed(methods.to_vec()),
            strict: false,
            captchas: Vec::new(),
            on_error: OnError::Allow,
            reject_redirect: None,
            challenge: true,
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
        let path = NormalPath::new(path, PathRules::default()).expect("normal path");
        let methods = RequestMethods::new(&m, &HeaderMap::new(), None).expect("method");
        t.find(host, &path, &methods).map(|r| r.origin.clone())
    }

    fn login_table(strict: bool, methods: Methods) -> RouteTable {
        let mut login = route(PathMatch::Exact("/login".into()), None, &[], "login");
        login.methods = methods.clone();
        login.strict = strict;
        let mut api = route(PathMatch::Prefix("/api/".into()), None, &[], "api");
        api.methods = methods;
        api.strict = strict;
        RouteTable::new(vec![login, api])
    }

    #[test]
    fn lenient_routes_match_any_case_trailing_slash_and_parameters() {
        let t = login_table(false, Methods::Listed(vec![Method::POST]));
        for p in [
            "/login",
            "/LOGIN",
            "/Login/",
            "/login;jsessionid=1",
            "//login",
            "/%6cogin",
            "/x/../login",
            "/login/.",
            "/API/x",
            "/api",
            "/api/",
            "//api/x",
            "/api;a/x",
        ] {
            assert!(origin(&t, None, p, Method::POST).is_some(), "{p} not gated");
        }
        for p in ["/logins", "/log", "/apix", "/ap", "/x/login"] {
            assert_eq!(origin(&t, None, p, Method::POST), None, "{p} gated");
        }
    }

    #[test]
    fn strict_routes_match_the_normal_path_exactly() {
        let t = login_table(true, Methods::Listed(vec![Method::POST]));
        assert!(origin(&t, None, "/login", Method::POST).is_some());
        // Normalisation still applies to strict routes.
        assert!(origin(&t, None, "//%6cogin", Method::POST).is_some());
        for p in ["/LOGIN", "/login/", "/login;x", "/api"] {
            assert_eq!(origin(&t, None, p, Method::POST), None, "{p}");
        }
    }

    #[test]
    fn head_is_gated_wherever_get_is() {
        let t = login_table(false, Methods::Listed(vec![Method::GET]));
        assert!(origin(&t, None, "/login", Method::HEAD).is_some());
        assert_eq!(origin(&t, None, "/login", Method::OPTIONS), None);
    }

    #[test]
    fn routes_without_methods_gate_all_but_get_head_and_options() {
        let t = login_table(false, Methods::Unsafe);
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::TRACE,
        ] {
            assert!(origin(&t, None, "/login", m.clone()).is_some(), "{m}");
        }
        let propfind = Method::from_bytes(b"PROPFIND").expect("method");
        assert!(origin(&t, None, "/login", propfind).is_some());
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(origin(&t, None, "/login", m.clone()), None, "{m}");
        }
    }

    #[test]
    fn an_override_header_counts_as_the_method() {
        let t = login_table(false, Methods::Listed(vec![Method::POST]));
        let mut h = HeaderMap::new();
        h.insert("x-http-method-override", "POST".parse().expect("value"));
        let methods = RequestMethods::new(&Method::GET, &h, None).expect("method");
        let path = NormalPath::new("/login", PathRules::default()).expect("path");
        assert!(t.find(None, &path, &methods).is_some());
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
