//! The master's gRPC API, generated from `proto/crawler.proto`: `CrawlerMaster` with
//! `AddResource` and `DeleteResource` at `/crawler.CrawlerMaster/...`; and in [`compat`] the
//! original system's package-less API at `/CrawlerMaster/...`. Nothing but generated code
//! lives here.
#![allow(missing_docs)]
#![allow(clippy::all)]

tonic::include_proto!("crawler");

/// The original system's API (`proto/compat/crawler.proto`, no package).
pub mod compat {
    include!(concat!(env!("OUT_DIR"), "/compat/_.rs"));
}
