//! Login by e-mail code: `send-email-code` and `confirm-email-code`.
//!
//! # Layout
//! - [`ports`]: what the use cases need from the outside (store, mail).
//! - [`send`]: create a challenge, answer success-shaped, deliver after the answer.
//! - [`confirm`]: check the code and key, create (or replay) the device session.
//! - [`settings`]: everything configurable, read once per request from Spin variables.

pub mod confirm;
pub mod ports;
pub mod send;
pub mod settings;

#[cfg(test)]
mod tests;
