//! What releasectl keeps on disk about an app: the staging record of each
//! release, history, the pending activation, the lock, requests, and the
//! list of releases (store); and the journal fields of an outcome.
//!
//! May import: host, config, fs and the base modules; never staging,
//! activation or cli.

pub mod history;
pub mod journal;
pub mod lock;
pub mod pending;
pub mod record;
pub mod request;
pub mod store;
