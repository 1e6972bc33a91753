//! The verbs that talk to `vtd`, one file each (list and info share one).

pub mod audit;
mod boot;
pub mod client;
pub mod console;
pub mod create;
pub mod edit;
pub mod errors;
pub mod events;
pub mod lifecycle;
pub mod list;
pub mod net;
mod options;
pub mod output;
pub mod policy;
pub mod power;
pub mod setmem;
pub mod stats;
pub mod top;
