//! End-to-end tests: real components, our Spin-faithful host, a throwaway Redis each.

mod gateway;
mod health;
mod host;
mod login;
mod logs;
mod metrics;
mod push;
mod rest;
mod sessions;
