//! Black-box tests: each starts the real `herd` binary on a config in a temp dir, with
//! listen addresses on port 0 so the kernel picks free ports.

#![forbid(unsafe_code)]

mod api_limits;
mod backpressure;
mod badinput;
mod bulk;
mod cluster;
mod config;
mod control;
mod dashboard;
mod deploy;
mod durability;
mod fuzz_corpus;
mod gateway;
mod grpc;
mod hosts;
mod invoke;
mod lifecycle;
mod limits;
mod node;
mod pubsub;
mod reload;
mod resiliency;
mod sdk;
mod sdk_pubsub;
mod sdk_python;
mod shop;
mod shop_node;
mod sidecar;
mod state;
mod subscribe;
mod tidy;
mod tls;
mod tracing;
mod util;
mod verbs;
