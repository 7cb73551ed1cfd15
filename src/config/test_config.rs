//! The smallest valid config, for the section tests to add to: errors are
//! located by line, so each test knows BASE ends on line 8.

use std::path::Path;

use super::{Config, ConfigError, parse_str};

pub const BASE: &str = r#"
[server]
http = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[captcha.main]
id = "0123456789abcdef0123456789abcdef"
key = "0123456789abcdef0123456789abcdef"
"#;

/// BASE and `extra`, as if read from `dir/gatekeeper.toml`.
pub fn load(extra: &str, dir: &Path) -> Result<Config, ConfigError> {
    parse_str(&format!("{BASE}{extra}"), &dir.join("gatekeeper.toml"))
}

/// The error BASE and `extra` give; panics if they are accepted.
pub fn error_of(extra: &str, dir: &Path) -> String {
    match load(extra, dir) {
        Ok(_) => panic!("accepted:\n{extra}"),
        Err(e) => e.to_string(),
    }
}
