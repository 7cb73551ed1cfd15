//! What `gatekeeper check` prints for a valid file. Keys are never shown.

use std::fmt::Write;

use humantime::format_duration;

use super::{
    AcmeChallenge, Config, EncodedSlash, Methods, OnError, PathMatch, ReplayStoreKind,
    ThrottleStore,
};

impl Config {
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut listeners = Vec::new();
        if let Some(a) = self.server.https {
            listeners.push(format!("https {a} (h2, http/1.1)"));
        }
        if let Some(a) = self.server.http {
            listeners.push(format!("http {a} (http/1.1, h2 prior knowledge)"));
        }
        if let Some(a) = self.server.admin {
            listeners.push(format!("admin {a} (metrics, health)"));
        }
        let _ = writeln!(out, "listeners: {}", listeners.join(", "));
        if let Some(a) = &self.acme {
            let _ = writeln!(
                out,
                "tls: ACME certificate for {} from {} ({}), cached in {}",
                a.domains.join(", "),
                a.directory,
                match a.challenge {
                    AcmeChallenge::TlsAlpn01 => "tls-alpn-01 on the https listener",
                    AcmeChallenge::Http01 => "http-01 on the http listener",
                },
                a.cache.display()
            );
        }
        if !self.server.trusted_proxies.is_empty() {
            let nets: Vec<String> = self
                .server
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = writeln!(out, "trusted proxies: {}", nets.join(", "));
        }
        let u = &self.upstream;
        let _ = writeln!(
            out,
            "upstream: {} (connect {}, timeout {})",
            u.url,
            format_duration(u.connect_timeout),
            format_duration(u.timeout)
        );
        let g = &self.geetest;
        let _ = writeln!(
            out,
            "geetest: {} (timeout {}, on_error {}, max_token_age {})",
            g.api_servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", then "),
            format_duration(g.timeout),
            on_error_name(g.on_error),
            format_duration(g.max_token_age)
        );
        for c in self.captchas.values() {
            let _ = writeln!(out, "captcha {}: id {}", c.name, c.id);
        }
        let store = match &self.replay.store {
            ReplayStoreKind::Memory => "memory".to_owned(),
            ReplayStoreKind::Redis { .. } => format!("redis (prefix {:?})", self.replay.key_prefix),
        };
        let _ = writeln!(
            out,
            "replay: {store}, ttl {}, max {} entries",
            format_duration(self.replay.ttl),
            self.replay.max_entries
        );
        let c = &self.challenge;
        let _ = writeln!(
            out,
            "challenge: keeps up to {} requests ({}) for {}, widget {}{}",
            c.max_entries,
            super::values::format_size(c.max_bytes),
            format_duration(c.ttl),
            c.widget_url,
            if c.template.is_some() {
                ", own template"
            } else {
                ""
            }
        );
        let own: Vec<&str> = [
            ("refusal", self.pages.refusal.is_some()),
            ("expired", self.pages.expired.is_some()),
        ]
        .into_iter()
        .filter_map(|(page, own)| own.then_some(page))
        .collect();
        if !own.is_empty() {
            let _ = writeln!(out, "pages: own {} page", own.join(" and "));
        }
        if let Some(t) = &self.throttle {
            let _ = writeln!(
                out,
                "throttle: {:.2} refused proofs/s per client, burst {}, {}",
                t.per_second,
                t.burst,
                match t.store {
                    ThrottleStore::Memory => format!("{} clients tracked at most", t.max_clients),
                    ThrottleStore::Replay => "in the replay store's redis".to_owned(),
                    ThrottleStore::Redis { .. } => "in redis".to_owned(),
                }
            );
        }
        let p = &self.paths;
        let _ = writeln!(
            out,
            "paths: normalised before routing and forwarded normalised (unreserved escapes decoded, dot segments removed{}); refused with 400: {}%00, control characters, invalid UTF-8 escapes, climbs above the root, lower-case methods",
            if p.merge_slashes {
                ", repeated slashes merged"
            } else {
                "; repeated slashes kept, routed as one"
            },
            match p.encoded_slash {
                EncodedSlash::Reject => "encoded / and \\, ",
                EncodedSlash::Keep => "",
            },
        );
        if p.encoded_slash == EncodedSlash::Keep {
            let _ = writeln!(
                out,
                "paths: encoded / and \\ forwarded as sent, routed as a /"
            );
        }
        let _ = writeln!(out, "config hash: {}", self.hash);
        let _ = writeln!(out, "routes ({}):", self.routes.len());
        for r in &self.routes {
            let methods = match &r.methods {
                Methods::Listed(list) => {
                    let mut names: Vec<&str> = list.iter().map(http::Method::as_str).collect();
                    if list.contains(&http::Method::GET) && !list.contains(&http::Method::HEAD) {
                        names.push("(HEAD)");
                    }
                    names.join(",")
                }
                Methods::Unsafe => "all but GET,HEAD,OPTIONS".to_owned(),
            };
            let kind = match (&r.path, r.strict) {
                (PathMatch::Exact(_), false) => {
                    "exact path, any case, trailing slash and ;params ignored"
                }
                (PathMatch::Prefix(_), false) => "prefix, any case, ;params ignored",
                (PathMatch::Exact(_), true) => "exact path, strict",
                (PathMatch::Prefix(_), true) => "prefix, strict",
            };
            let names: Vec<&str> = r.captchas.iter().map(|c| c.name.as_str()).collect();
            let _ = writeln!(
                out,
                "  {} {} ({kind}) captcha {} on_error {}",
                methods,
                r.origin,
                names.join(","),
                on_error_name(r.on_error)
            );
        }
        if !self.injects.is_empty() {
            let _ = writeln!(
                out,
                "inject ({}): the widget goes into the app's forms",
                self.injects.len()
            );
            for i in &self.injects {
                let names: Vec<&str> = i.route.captchas.iter().map(|c| c.name.as_str()).collect();
                let _ = writeln!(
                    out,
                    "  {} form {} captcha {}",
                    i.route.origin,
                    i.form_text,
                    names.join(",")
                );
            }
        }
        out.trim_end().to_owned()
    }
}

fn on_error_name(o: OnError) -> &'static str {
    match o {
        OnError::Allow => "allow",
        OnError::Deny => "deny",
    }
}
