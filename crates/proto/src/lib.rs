//! The master's gRPC API, generated from `proto/crawler.proto`: `CrawlerMaster` with
//! `AddResource` and `DeleteResource`. Nothing but generated code lives here.
#![allow(missing_docs)]
#![allow(clippy::all)]

tonic::include_proto!("crawler");
