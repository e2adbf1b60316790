//! REST/JSON ↔ protobuf, generically from the descriptors: no code per
//! method ([`request::build`], [`response::to_json`]).

pub mod request;
pub mod response;

pub use request::RequestError;
