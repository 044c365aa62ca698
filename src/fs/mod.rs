//! Files under an app root, reached only through directory handles.
//!
//! Owns the directory-handle toolkit ([`dir`]) and the rights root acts
//! with below a tree another user owns ([`creds`]).
//!
//! May import: the base modules at the crate root (error, log, clock,
//! release_id, fault, passwd), nothing else of ours.

pub mod bytes;
pub mod creds;
pub mod dir;
pub mod root;
