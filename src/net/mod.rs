//! Listener plumbing both listeners share: the bounded accept loop, the request-head deadline,
//! and TLS with certificates reloaded from disk.

pub mod head_deadline;
pub mod listener;
pub mod tls;
