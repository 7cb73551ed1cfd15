//! stub: replaced by the geetest work
#[derive(Debug)]
pub struct ValidateClient;
#[derive(Debug)]
pub enum ValidateError {}
