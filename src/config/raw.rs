//! stub: replaced by the config work
