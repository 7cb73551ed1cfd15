//! stub: replaced by the config work
#[derive(Debug)]
pub struct Diagnostic;
#[derive(Debug)]
pub struct ConfigError;
