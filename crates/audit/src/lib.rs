//! VT System's tamper-evident audit trail.
//!
//! - [`Trail`]: an append-only log of [`Record`]s, one JSON line each,
//!   each carrying the SHA-256 of the one before ([`record`]), with sealed
//!   checkpoints and a sealed head ([`seal`]: HMAC-SHA256 with a key kept
//!   outside the log), rotated by size with the chain continuing across
//!   files ([`trail`]).
//! - [`verify()`]: finds edited, deleted, reordered, inserted and cut-off
//!   records and removed files, and says where.
//! - [`search()`]: records by VM, key, action, uid, time, result.
//! - [`fanotify`]: file-access watches (`auditctl -w` semantics).

pub mod anchor;
pub mod fanotify;
pub mod files;
pub mod record;
pub mod seal;
pub mod search;
pub mod trail;
pub mod verify;

pub use record::{Entry, Outcome, Record};
pub use seal::Key;
pub use search::{search, Filter};
pub use trail::{Config, Trail};
pub use verify::{verify, Problem, Report};
