//! `userfetch demo`: the same scripted session run sync and async, measured and drawn.

pub mod timeline;
