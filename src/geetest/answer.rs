//! stub: replaced by the geetest work
#[derive(Debug)]
pub enum Verdict {}
