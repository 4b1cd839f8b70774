//! End-to-end tests: real components, our Spin-faithful host, a throwaway Redis each.

mod health;
mod host;
mod login;
mod sessions;
