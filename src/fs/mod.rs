//! Files under an app root, reached only through directory handles.
//!
//! Owns the directory-handle toolkit ([`dir`]), the app-root layout built
//! on it ([`root`]: `current`, `releases/`, `.releasectl/`), the rights
//! root acts with below a tree another user owns ([`creds`]), and byte
//! helpers for copies and hashes ([`bytes`]).
//!
//! May import: the base modules at the crate root (error, log, clock,
//! release_id, fault, passwd, progress), nothing else of ours.

pub mod bytes;
pub mod creds;
pub mod dir;
pub mod root;
