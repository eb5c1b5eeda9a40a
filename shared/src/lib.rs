//! xinfang's shared library: the domain (pure, no I/O) and the plumbing every service uses.
//!
//! # Layout
//! - Domain, pure: [`ids`] (newtypes that parse), [`petition`] (validation), [`event`]
//!   (the ledger's events), [`state`] (the case state machine), [`calendar`] (the
//!   regulation's clock), [`dues`], [`indicators`] (the offices' counts), [`access`] (roles,
//!   scopes, credentials checked, personal data masked), [`keyring`] (keyed hashes with the
//!   node secret), [`worklist`] (what the inbox and overview show of a case), [`open311`] (GeoReport v2 services,
//!   requests and errors), [`reception`] (leaders' reception days and appointments),
//!   [`campaign`] (攻坚化解: settled cases and progress), [`city_view`] (the figures a node
//!   reports to its parent), [`time`], [`error`] (wire errors),
//!   [`subjects`]; [`fixtures`]:
//!   ready-made events for the services' unit tests (always built, so a test build does not
//!   compile this crate a second time with a feature on).
//! - Plumbing: [`config`] (node file), [`ledger`] (JetStream append/read), [`agenda`] (reception
//!   slots, bookings and campaigns in their own stream), [`links`] (cross-node streams),
//!   [`leaf_auth`] (leaf-link credentials), [`audit`] (staff reads of personal data), [`gate`] (the APIs' door: `Authorization` → caller,
//!   the public's rate limit), [`sessions`] (staff sessions in JetStream KV), [`endpoints`] (NATS request/reply),
//!   [`consumer`] (durable consumer loop), [`projection`] (sled), [`ops`] (metrics and
//!   health), [`runtime`] (logging, signals, NATS connection).
#![forbid(unsafe_code)]

pub mod access;
pub mod action;
pub mod agenda;
pub mod audit;
pub mod calendar;
pub mod campaign;
pub mod city_view;
pub mod config;
pub mod consumer;
pub mod dues;
pub mod endpoints;
pub mod error;
pub mod escalation;
pub mod event;
pub mod fast_ingest;
pub mod fixtures;
pub mod gate;
pub mod ids;
pub mod indicators;
pub mod keyring;
pub mod leaf_auth;
pub mod ledger;
pub mod links;
pub mod notice;
pub mod open311;
pub mod ops;
pub mod petition;
pub mod projection;
pub mod reception;
pub mod routing;
pub mod runtime;
pub mod sessions;
pub mod state;
pub mod subjects;
pub mod time;
pub mod transfer;
pub mod worklist;

pub use tokio_util::sync::CancellationToken;
