//! Integration tests of the controllers against the embedded API server,
//! with fake agents standing in for the real ones. One binary, to keep
//! builds short.

mod agents;
mod charts;
mod fanout;
mod gc;
mod gitrepo;
mod ha;
mod helmop;
mod hostile;
mod steady;
mod support;
mod tls;
